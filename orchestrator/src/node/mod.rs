//! Installed `node_modules` and the Node toolchain for actions that ask for
//! them (`node_modules = true` in `vbuild.toml` or on a target).
//!
//! - **Only what the action can reach**: the node_modules directories of
//!   its package and its ancestors up to the root, and of the workspace
//!   packages those link to, transitively (for pnpm from the lockfile's
//!   `link:` entries, which the key covers; otherwise from the links on
//!   disk). Packages the action cannot resolve into cost it nothing, so
//!   staging is O(what the action reaches), not O(workspace).
//! - **Staging, without copying**: each reachable `node_modules` directory
//!   is recreated in the scratch
//!   workspace as a real, writable directory whose entries point at the
//!   installed ones: symlinks are copied as symlinks (pnpm's relative links
//!   then resolve inside the sandbox, e.g. `@demo/lib -> ../../lib` reaches
//!   the staged `dist/`), scope directories (`@scope/`) are recreated one
//!   level deep, and every other directory or file is bound read-only at its
//!   workspace path (namespaces) or symlinked to the real one (scratch).
//!   Tool caches (`.vite`, `.vite-temp`, `.cache`) are left out, so tools
//!   write fresh ones into the scratch copy, never into the workspace.
//! - **Key**: node_modules are not hashed. Their part of the key is the
//!   package manager, the node version, the reachable node_modules
//!   directories and the lockfile: for pnpm, the
//!   slice of `pnpm-lock.yaml` the package can reach (its importer, the
//!   root's, those of the workspace packages it links to, and the closure of
//!   their snapshots); for other lockfiles, the whole file.
mod pnpm_lock;

use crate::workspace::join_package;
use anyhow::{Context, Result};
use pnpm_lock::PnpmLock;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Entries of node_modules never exposed: tool caches, which actions must
/// write fresh (and which must never leak a host build's state into one).
const CACHE_ENTRIES: &[&str] = &[".vite", ".vite-temp", ".cache"];

/// Lockfiles in the order they are looked for at the workspace root.
const LOCKFILES: &[(&str, &str)] = &[
    ("pnpm-lock.yaml", "pnpm"),
    ("package-lock.json", "npm"),
    ("npm-shrinkwrap.json", "npm"),
    ("yarn.lock", "yarn"),
    ("bun.lock", "bun"),
];

/// What a run knows about the workspace's installed packages.
pub struct NodeEnv {
    /// Workspace-relative directories that hold a `node_modules` directory
    /// ("" for the root), sorted.
    pub module_dirs: Vec<String>,
    /// e.g. `pnpm@10.4.1`, `pnpm`, `npm`, or `none` without a lockfile.
    pub manager: String,
    /// `node --version`, or `absent`.
    pub node_version: String,
    /// The directory holding `node` when it lives outside the system
    /// directories every sandbox sees (nvm, volta, ...): added to PATH and
    /// bound read-only (its parent, the install prefix) in namespaces mode.
    pub node_bin_dir: Option<PathBuf>,
    lock: Lock,
    root: PathBuf,
    /// Workspace packages each node_modules directory links to (without a
    /// pnpm lockfile), read at most once per run.
    links: Mutex<HashMap<String, Arc<Vec<String>>>>,
}

enum Lock {
    None,
    /// A lockfile keyed as a whole.
    Whole {
        name: String,
        digest: String,
    },
    Pnpm(Box<PnpmLock>),
}

/// The workspace's lockfile, read and parsed: by [`Lockfile::read`] on the
/// thread that opens the store while the workspace loads (parsing a
/// 1000-importer pnpm-lock.yaml was 3 % of a no-op, all of it waited for).
pub struct Lockfile {
    manager: String,
    lock: Lock,
}

impl Lockfile {
    /// The first lockfile of `LOCKFILES` at the root (none: manager "none").
    pub fn read(root: &Path) -> Lockfile {
        for (name, pm) in LOCKFILES {
            let Ok(bytes) = std::fs::read(root.join(name)) else {
                continue;
            };
            let lock = match (*pm, std::str::from_utf8(&bytes)) {
                ("pnpm", Ok(text)) => match PnpmLock::parse(text) {
                    Some(p) => Lock::Pnpm(Box::new(p)),
                    None => Lock::Whole {
                        name: name.to_string(),
                        digest: blake3::hash(&bytes).to_hex().to_string(),
                    },
                },
                _ => Lock::Whole {
                    name: name.to_string(),
                    digest: blake3::hash(&bytes).to_hex().to_string(),
                },
            };
            return Lockfile {
                manager: pm.to_string(),
                lock,
            };
        }
        Lockfile {
            manager: "none".to_string(),
            lock: Lock::None,
        }
    }
}

impl NodeEnv {
    /// Looks at the workspace once per run. `state_dir` caches the node
    /// version per binary (by inode, size and mtime), so a no-op run does
    /// not start node.
    /// `module_dirs` come from the workspace walk (`Tree::module_dirs`).
    pub fn detect(
        root: &Path,
        module_dirs: Vec<String>,
        state_dir: &Path,
        lockfile: Lockfile,
    ) -> Result<NodeEnv> {
        let Lockfile { mut manager, lock } = lockfile;
        if let Some(version) = manager_version(root) {
            if version.starts_with(&format!("{manager}@")) || manager == "none" {
                manager = version;
            }
        }
        let (node_version, node_bin_dir) = match find_node() {
            Some(node) => {
                let version = node_version(&node, state_dir)?;
                let dir = node.parent().map(Path::to_path_buf);
                let system = dir.as_ref().is_some_and(|d| {
                    crate::action::ACTION_PATH
                        .split(':')
                        .any(|p| Path::new(p) == d.as_path())
                });
                (version, if system { None } else { dir })
            }
            None => ("absent".to_string(), None),
        };
        Ok(NodeEnv {
            module_dirs,
            manager,
            node_version,
            node_bin_dir,
            lock,
            root: root.to_path_buf(),
            links: Mutex::default(),
        })
    }

    /// The node_modules directories (workspace-relative, "" for the root,
    /// sorted) an action in `package` can resolve into: its own and its
    /// ancestors', then those of every workspace package reached through
    /// a link, and their ancestors', transitively. With a pnpm lockfile the
    /// links are its importers' `link:` versions (what the key's lockfile
    /// slice covers); otherwise the symlinks found in node_modules.
    pub fn reachable_dirs(&self, package: &str) -> Vec<String> {
        // Indexes into `module_dirs` (sorted), so the result comes out sorted.
        let mut seen = BTreeSet::new();
        let add = |pkg: &str, seen: &mut BTreeSet<usize>| -> Vec<usize> {
            ancestors(pkg)
                .filter_map(|dir| self.module_dir_index(dir))
                .filter(|&i| seen.insert(i))
                .collect()
        };
        match &self.lock {
            Lock::Pnpm(p) => {
                add(package, &mut seen);
                for imp in p.reachable_importers(package) {
                    add(if imp == "." { "" } else { imp }, &mut seen);
                }
            }
            _ => {
                let mut visited = BTreeSet::new();
                let mut todo = vec![package.to_string()];
                while let Some(pkg) = todo.pop() {
                    if visited.insert(pkg.clone()) {
                        for i in add(&pkg, &mut seen) {
                            todo.extend(self.links_of(&self.module_dirs[i]).iter().cloned());
                        }
                    }
                }
            }
        }
        seen.into_iter()
            .map(|i| self.module_dirs[i].clone())
            .collect()
    }

    fn module_dir_index(&self, dir: &str) -> Option<usize> {
        self.module_dirs
            .binary_search_by(|d| d.as_str().cmp(dir))
            .ok()
    }

    fn has_module_dir(&self, dir: &str) -> bool {
        self.module_dir_index(dir).is_some()
    }

    /// Workspace directories the symlinks in `dir`'s node_modules (and its
    /// `@scope/` directories) point to, outside any node_modules.
    fn links_of(&self, dir: &str) -> Arc<Vec<String>> {
        if let Some(l) = self.links.lock().unwrap().get(dir) {
            return l.clone();
        }
        let nm = join_package(dir, "node_modules");
        let mut found = BTreeSet::new();
        let mut scan = |rel_dir: &str| -> Vec<String> {
            let mut scopes = vec![];
            let Ok(entries) = std::fs::read_dir(self.root.join(rel_dir)) else {
                return scopes;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Ok(ft) = e.file_type() else { continue };
                if ft.is_dir() && name.starts_with('@') && rel_dir == nm {
                    scopes.push(format!("{rel_dir}/{name}"));
                } else if ft.is_symlink() {
                    let Ok(target) = std::fs::read_link(e.path()) else {
                        continue;
                    };
                    if let Some(t) = workspace_target(&self.root, rel_dir, &target) {
                        found.insert(t);
                    }
                }
            }
            scopes
        };
        for scope in scan(&nm) {
            scan(&scope);
        }
        let links = Arc::new(found.into_iter().collect::<Vec<_>>());
        self.links
            .lock()
            .unwrap()
            .insert(dir.to_string(), links.clone());
        links
    }

    /// The part of an action's key standing for node_modules: package
    /// manager, node version, where node_modules are installed, and the
    /// lockfile (for pnpm only the slice `package` and the workspace
    /// packages in `linked` can reach).
    pub fn key_part(&self, package: &str) -> BTreeMap<String, String> {
        let lockfile = match &self.lock {
            Lock::None => "none".to_string(),
            Lock::Whole { name, digest } => format!("{name} {digest}"),
            Lock::Pnpm(p) => {
                // Which of each importer's ancestors have node_modules
                // (what staging exposes), inside the Merkle hash.
                let flags = |imp: &str| -> String {
                    let imp = if imp == "." { "" } else { imp };
                    let dirs: Vec<&str> =
                        ancestors(imp).filter(|d| self.has_module_dir(d)).collect();
                    dirs.join(",")
                };
                match p.merkle_slice(package, &flags) {
                    Some(m) => {
                        let own = flags(package);
                        return self.key_map(format!("pnpm-lock.yaml merkle {m}"), own);
                    }
                    None => format!("pnpm-lock.yaml slice {}", p.slice_digest(package)),
                }
            }
        };
        self.key_map(lockfile, dirs_digest(&self.reachable_dirs(package)))
    }

    fn key_map(&self, lockfile: String, node_modules: String) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("manager".to_string(), self.manager.clone()),
            ("node".to_string(), self.node_version.clone()),
            // A digest (or, with the pnpm Merkle slice, which covers the
            // rest, the package's own ancestors): the list can name
            // hundreds of directories.
            ("node_modules".to_string(), node_modules),
            ("lockfile".to_string(), lockfile),
        ])
    }

    /// Recreates the node_modules directories an action in `package` can
    /// reach ([`NodeEnv::reachable_dirs`]) under `scratch_ws` (the host
    /// side of the staged workspace). Returns what the sandbox must do:
    /// the node_modules directories to make writable and the read-only
    /// binds (host path, path inside under `ws_inside`) of their entries.
    pub fn stage(
        &self,
        package: &str,
        scratch_ws: &Path,
        ws_inside: &Path,
        bind: bool,
    ) -> Result<Staged> {
        let root = &self.root;
        let mut staged = Staged::default();
        for dir in &self.reachable_dirs(package) {
            let rel = join_package(dir, "node_modules");
            let (host, dest) = (root.join(&rel), scratch_ws.join(&rel));
            std::fs::create_dir_all(&dest)
                .with_context(|| format!("staging {rel} into the sandbox"))?;
            staged.writable.push(PathBuf::from(format!("{rel}/")));
            stage_dir(&host, &dest, &ws_inside.join(&rel), bind, true, &mut staged)
                .with_context(|| format!("staging {rel} into the sandbox"))?;
        }
        Ok(staged)
    }

    /// `node_modules/.bin` directories for a command run in `package`, as
    /// the package managers put them on PATH: the package's first, then
    /// each ancestor's up to the root.
    pub fn bin_dirs(&self, ws_inside: &Path, package: &str) -> Vec<PathBuf> {
        ancestors(package)
            .filter(|p| self.has_module_dir(p))
            .map(|p| ws_inside.join(join_package(p, "node_modules/.bin")))
            .collect()
    }
}

fn dirs_digest(dirs: &[String]) -> String {
    let mut h = blake3::Hasher::new();
    for d in dirs {
        h.update(d.as_bytes());
        h.update(b"\0");
    }
    format!("{} dirs {}", dirs.len(), &h.finalize().to_hex()[..16])
}

/// `package`, its parent, ..., "" (the root).
fn ancestors(package: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(package), |p| {
        (!p.is_empty()).then(|| p.rsplit_once('/').map_or("", |(parent, _)| parent))
    })
}

/// The workspace-relative directory a symlink in `link_dir` (itself
/// workspace-relative) points to, if it lies in the workspace outside any
/// node_modules (a workspace package, not an installed one).
fn workspace_target(root: &Path, link_dir: &str, target: &Path) -> Option<String> {
    let mut parts: Vec<String> = if target.is_absolute() {
        let rel = target.strip_prefix(root).ok()?;
        return workspace_target(root, "", rel);
    } else {
        link_dir
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    for c in target.components() {
        match c {
            Component::Normal(n) => parts.push(n.to_str()?.to_string()),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!parts.iter().any(|p| p == "node_modules")).then(|| parts.join("/"))
}

/// What staging asks of the sandbox.
#[derive(Default, Debug)]
pub struct Staged {
    /// Workspace-relative node_modules directories (with a trailing `/`),
    /// made writable so tools can create their caches there.
    pub writable: Vec<PathBuf>,
    /// (host path, path inside the sandbox), bound read-only.
    pub ro_binds: Vec<(PathBuf, PathBuf)>,
}

fn stage_dir(
    host: &Path,
    dest: &Path,
    inside: &Path,
    bind: bool,
    top: bool,
    staged: &mut Staged,
) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(host)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        if top && CACHE_ENTRIES.contains(&name_str.as_ref()) {
            continue;
        }
        let (h, d, i) = (host.join(&name), dest.join(&name), inside.join(&name));
        let ft = entry.file_type()?;
        if ft.is_symlink() {
            // Relative links (pnpm, npm workspaces) resolve inside the
            // staged tree, where dependencies' outputs are.
            std::os::unix::fs::symlink(std::fs::read_link(&h)?, &d)?;
        } else if ft.is_dir() && top && name_str.starts_with('@') {
            std::fs::create_dir(&d)?;
            stage_dir(&h, &d, &i, bind, false, staged)?;
        } else if bind {
            if ft.is_dir() {
                std::fs::create_dir(&d)?;
            } else {
                std::fs::File::create(&d)?;
            }
            staged.ro_binds.push((h, i));
        } else {
            std::os::unix::fs::symlink(&h, &d)?;
        }
    }
    Ok(())
}

/// The `packageManager` of the root package.json (e.g. `pnpm@10.4.1`), or
/// the one pnpm recorded in `node_modules/.modules.yaml`.
fn manager_version(root: &Path) -> Option<String> {
    let from_json = std::fs::read(root.join("package.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("packageManager")?.as_str().map(str::to_string));
    from_json.or_else(|| {
        let text = std::fs::read_to_string(root.join("node_modules/.modules.yaml")).ok()?;
        // JSON or YAML, one `packageManager` entry either way.
        let line = text.lines().find(|l| {
            l.contains("\"packageManager\"") || l.trim_start().starts_with("packageManager:")
        })?;
        let value = line.split_once(':')?.1;
        Some(value.trim().trim_matches([',', '"', '\'']).to_string())
    })
}

/// `node` on the actions' PATH, else on vbuild's own PATH.
fn find_node() -> Option<PathBuf> {
    let host = std::env::var("PATH").unwrap_or_default();
    crate::action::ACTION_PATH
        .split(':')
        .chain(host.split(':'))
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join("node"))
        .find(|p| p.is_file())
}

/// `node --version`, cached in `state_dir` by the binary's identity.
fn node_version(node: &Path, state_dir: &Path) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let real = node.canonicalize()?;
    let meta = std::fs::metadata(&real)?;
    let id = format!(
        "{}\0{}\0{}\0{}\0{}",
        real.display(),
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime_nsec() + meta.mtime() * 1_000_000_000
    );
    let cached = state_dir.join(format!(
        "node-{}",
        &blake3::hash(id.as_bytes()).to_hex()[..32]
    ));
    if let Ok(v) = std::fs::read_to_string(&cached) {
        return Ok(v);
    }
    let out = std::process::Command::new(&real)
        .arg("--version")
        .env_clear()
        .output()
        .with_context(|| format!("running {} --version", real.display()))?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    anyhow::ensure!(
        out.status.success() && version.starts_with('v'),
        "{} --version printed {version:?}",
        real.display()
    );
    std::fs::create_dir_all(state_dir)?;
    let tmp = cached.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, &version)?;
    std::fs::rename(&tmp, &cached)?;
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(root: &Path, module_dirs: &[&str], lock: Lock) -> NodeEnv {
        NodeEnv {
            module_dirs: module_dirs.iter().map(|d| d.to_string()).collect(),
            manager: "pnpm".into(),
            node_version: "v1".into(),
            node_bin_dir: None,
            lock,
            root: root.to_path_buf(),
            links: Mutex::default(),
        }
    }

    #[test]
    fn staging_links_binds_and_skips_caches() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for d in [
            "node_modules/.pnpm/x",
            "node_modules/.vite",
            "node_modules/@s",
            "pkg/node_modules/.bin",
        ] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::write(r.join("node_modules/.modules.yaml"), "{}").unwrap();
        std::os::unix::fs::symlink("../../pkg", r.join("node_modules/@s/pkg")).unwrap();
        std::os::unix::fs::symlink(".pnpm/x", r.join("node_modules/x")).unwrap();
        let env = env(r, &["", "pkg"], Lock::None);
        let scratch = tempfile::tempdir().unwrap();
        let s = scratch.path();
        let staged = env.stage("pkg", s, Path::new("/vbuild/ws"), true).unwrap();
        assert_eq!(
            staged.writable,
            vec![
                PathBuf::from("node_modules/"),
                PathBuf::from("pkg/node_modules/")
            ]
        );
        let inside: Vec<String> = staged
            .ro_binds
            .iter()
            .map(|(_, i)| i.display().to_string())
            .collect();
        assert_eq!(
            inside,
            [
                "/vbuild/ws/node_modules/.modules.yaml",
                "/vbuild/ws/node_modules/.pnpm",
                "/vbuild/ws/pkg/node_modules/.bin"
            ]
        );
        assert!(!s.join("node_modules/.vite").exists());
        assert_eq!(
            std::fs::read_link(s.join("node_modules/@s/pkg")).unwrap(),
            Path::new("../../pkg")
        );
        assert_eq!(
            std::fs::read_link(s.join("node_modules/x")).unwrap(),
            Path::new(".pnpm/x")
        );
        // Scratch mode: links to the real entries instead of binds.
        let scratch2 = tempfile::tempdir().unwrap();
        let staged = env
            .stage("pkg", scratch2.path(), scratch2.path(), false)
            .unwrap();
        assert!(staged.ro_binds.is_empty());
        assert_eq!(
            std::fs::read_link(scratch2.path().join("node_modules/.pnpm")).unwrap(),
            r.join("node_modules/.pnpm")
        );
        assert_eq!(
            env.bin_dirs(Path::new("/w"), "pkg"),
            vec![
                PathBuf::from("/w/pkg/node_modules/.bin"),
                PathBuf::from("/w/node_modules/.bin")
            ]
        );
    }

    /// Only the node_modules an action can resolve into are staged: its
    /// package's, its ancestors', and those of the workspace packages it
    /// links to, transitively; never an unrelated package's.
    #[test]
    fn stages_only_reachable_node_modules() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for d in ["node_modules", "apps/web", "libs/a", "libs/b", "libs/c"] {
            std::fs::create_dir_all(r.join(d).join("node_modules/@s")).unwrap();
        }
        let link = |target: &str, at: &str| std::os::unix::fs::symlink(target, r.join(at)).unwrap();
        link("../../../../libs/a", "apps/web/node_modules/@s/a");
        link("../../b", "libs/a/node_modules/b");
        link(".pnpm/leftpad", "libs/a/node_modules/leftpad");
        let dirs = ["", "apps/web", "libs/a", "libs/b", "libs/c"];
        // From the links on disk (no pnpm lockfile).
        let fs_env = env(r, &dirs, Lock::None);
        assert_eq!(
            fs_env.reachable_dirs("apps/web"),
            ["", "apps/web", "libs/a", "libs/b"]
        );
        assert_eq!(fs_env.reachable_dirs("libs/c"), ["", "libs/c"]);
        let scratch = tempfile::tempdir().unwrap();
        let staged = fs_env
            .stage("libs/c", scratch.path(), Path::new("/vbuild/ws"), true)
            .unwrap();
        assert_eq!(
            staged.writable,
            [
                PathBuf::from("node_modules/"),
                PathBuf::from("libs/c/node_modules/")
            ]
        );
        assert!(!scratch.path().join("libs/a").exists());
        // From the lockfile's `link:` entries, which the key covers.
        let lock = "lockfileVersion: '9.0'\n\nimporters:\n\n  .: {}\n\n  apps/web:\n    dependencies:\n      '@s/a':\n        specifier: workspace:*\n        version: link:../../libs/a\n\n  libs/a:\n    dependencies:\n      b:\n        specifier: workspace:*\n        version: link:../b\n\n  libs/b: {}\n\n  libs/c: {}\n";
        let pnpm_env = env(
            r,
            &dirs,
            Lock::Pnpm(Box::new(PnpmLock::parse(lock).unwrap())),
        );
        assert_eq!(
            pnpm_env.reachable_dirs("apps/web"),
            ["", "apps/web", "libs/a", "libs/b"]
        );
        assert_eq!(pnpm_env.reachable_dirs("libs/b"), ["", "libs/b"]);
        assert_eq!(
            fs_env.key_part("libs/c")["node_modules"],
            dirs_digest(&["".into(), "libs/c".into()]),
            "the key names the reachable directories only"
        );
        assert_ne!(
            pnpm_env.key_part("libs/c")["lockfile"],
            pnpm_env.key_part("libs/b")["lockfile"]
        );
        // A node_modules directory appearing in a linked package counts.
        let fewer = env(
            r,
            &["", "apps/web", "libs/a"],
            Lock::Pnpm(Box::new(PnpmLock::parse(lock).unwrap())),
        );
        assert_ne!(
            fewer.key_part("apps/web")["lockfile"],
            pnpm_env.key_part("apps/web")["lockfile"]
        );
    }
}
