//! Installed `node_modules` and the Node toolchain for actions that ask for
//! them (`node_modules = true` in `vbuild.toml` or on a target).
//!
//! - **Staging, without copying**: each `node_modules` directory of the
//!   workspace (the root's and every package's) is recreated in the scratch
//!   workspace as a real, writable directory whose entries point at the
//!   installed ones: symlinks are copied as symlinks (pnpm's relative links
//!   then resolve inside the sandbox, e.g. `@demo/lib -> ../../lib` reaches
//!   the staged `dist/`), scope directories (`@scope/`) are recreated one
//!   level deep, and every other directory or file is bound read-only at its
//!   workspace path (namespaces) or symlinked to the real one (scratch).
//!   Tool caches (`.vite`, `.vite-temp`, `.cache`) are left out, so tools
//!   write fresh ones into the scratch copy, never into the workspace.
//! - **Key**: node_modules are not hashed. Their part of the key is the
//!   package manager, the node version and the lockfile: for pnpm, the
//!   slice of `pnpm-lock.yaml` the package can reach (its importer, the
//!   root's, those of the workspace packages it links to, and the closure of
//!   their snapshots); for other lockfiles, the whole file.
use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

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
}

enum Lock {
    None,
    /// A lockfile keyed as a whole.
    Whole {
        name: String,
        digest: String,
    },
    Pnpm(PnpmLock),
}

impl NodeEnv {
    /// Looks at the workspace once per run. `state_dir` caches the node
    /// version per binary (by inode, size and mtime), so a no-op run does
    /// not start node.
    pub fn detect(root: &Path, state_dir: &Path) -> Result<NodeEnv> {
        let module_dirs = find_module_dirs(root);
        let mut lock = Lock::None;
        let mut manager = "none".to_string();
        for (name, pm) in LOCKFILES {
            let path = root.join(name);
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            manager = pm.to_string();
            lock = match (*pm, std::str::from_utf8(&bytes)) {
                ("pnpm", Ok(text)) => match PnpmLock::parse(text) {
                    Some(p) => Lock::Pnpm(p),
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
            break;
        }
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
        })
    }

    /// The part of an action's key standing for node_modules: package
    /// manager, node version, where node_modules are installed, and the
    /// lockfile (for pnpm only the slice `package` and the workspace
    /// packages in `linked` can reach).
    pub fn key_part(&self, package: &str) -> BTreeMap<String, String> {
        let lockfile = match &self.lock {
            Lock::None => "none".to_string(),
            Lock::Whole { name, digest } => format!("{name} {digest}"),
            Lock::Pnpm(p) => format!("pnpm-lock.yaml slice {}", p.slice_digest(package)),
        };
        BTreeMap::from([
            ("manager".to_string(), self.manager.clone()),
            ("node".to_string(), self.node_version.clone()),
            ("node_modules".to_string(), self.module_dirs.join(",")),
            ("lockfile".to_string(), lockfile),
        ])
    }

    /// Recreates every node_modules directory under `scratch_ws` (the
    /// host side of the staged workspace). Returns what the sandbox must
    /// do: the node_modules directories to make writable and the read-only
    /// binds (host path, path inside under `ws_inside`) of their entries.
    pub fn stage(
        &self,
        root: &Path,
        scratch_ws: &Path,
        ws_inside: &Path,
        bind: bool,
    ) -> Result<Staged> {
        let mut staged = Staged::default();
        for dir in &self.module_dirs {
            let rel = join(dir, "node_modules");
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
        let mut dirs = Vec::new();
        let mut pkg = Some(package);
        while let Some(p) = pkg {
            if self.module_dirs.iter().any(|d| d == p) {
                dirs.push(ws_inside.join(join(p, "node_modules/.bin")));
            }
            pkg = if p.is_empty() {
                None
            } else {
                Some(p.rsplit_once('/').map_or("", |(parent, _)| parent))
            };
        }
        dirs
    }
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

fn join(dir: &str, rel: &str) -> String {
    if dir.is_empty() {
        rel.to_string()
    } else {
        format!("{dir}/{rel}")
    }
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

/// Directories holding a `node_modules` directory: the root and any
/// directory below it (not inside node_modules or hidden directories).
fn find_module_dirs(root: &Path) -> Vec<String> {
    let mut dirs = Vec::new();
    for entry in crate::workspace::searched_dirs(root) {
        let nm = entry.path().join("node_modules");
        if std::fs::symlink_metadata(&nm).is_ok_and(|m| m.is_dir()) {
            let rel = entry.path().strip_prefix(root).unwrap_or(Path::new(""));
            dirs.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
    dirs.sort();
    dirs
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

/// `pnpm-lock.yaml` (lockfile v6 and later) cut into entries, read line by
/// line: enough structure to slice it per package without a YAML parser.
/// Anything unexpected makes `parse` return `None` and the whole file keys.
pub struct PnpmLock {
    /// Top-level sections other than the three below, verbatim.
    header: String,
    /// Importer path ("." for the root) → its block.
    importers: BTreeMap<String, Entry>,
    /// `name@version` → its block (metadata).
    packages: BTreeMap<String, String>,
    /// `name@version(peers)` → its block and its dependencies' keys.
    snapshots: BTreeMap<String, Entry>,
}

#[derive(Default)]
struct Entry {
    text: String,
    /// (name, version) of each dependency.
    deps: Vec<(String, String)>,
}

fn unquote(s: &str) -> String {
    s.trim().trim_matches(['\'', '"']).to_string()
}

impl PnpmLock {
    pub fn parse(text: &str) -> Option<PnpmLock> {
        let mut lock = PnpmLock {
            header: String::new(),
            importers: BTreeMap::new(),
            packages: BTreeMap::new(),
            snapshots: BTreeMap::new(),
        };
        let mut section = String::new();
        let mut current: Option<String> = None;
        let mut pending_name: Option<String> = None;
        for line in text.lines() {
            if line.trim().is_empty() {
                continue;
            }
            let indent = line.len() - line.trim_start().len();
            if indent == 0 {
                section = line.trim_end_matches(':').trim().to_string();
                current = None;
                if !matches!(section.as_str(), "importers" | "packages" | "snapshots") {
                    lock.header.push_str(line);
                    lock.header.push('\n');
                }
                continue;
            }
            match section.as_str() {
                "importers" | "packages" | "snapshots" => {}
                _ => {
                    lock.header.push_str(line);
                    lock.header.push('\n');
                    continue;
                }
            }
            if indent == 2 {
                let key = unquote(line.trim().strip_suffix(':').or_else(|| {
                    // `  name@1.0.0: {}`: an entry with nothing inside.
                    line.trim().strip_suffix(": {}")
                })?);
                current = Some(key.clone());
                pending_name = None;
                match section.as_str() {
                    "importers" => {
                        lock.importers.insert(key, Entry::default());
                    }
                    "packages" => {
                        lock.packages.insert(key, String::new());
                    }
                    _ => {
                        lock.snapshots.insert(key, Entry::default());
                    }
                }
            }
            let key = current.as_ref()?;
            let body = line.trim();
            match section.as_str() {
                "packages" => {
                    let e = lock.packages.get_mut(key)?;
                    e.push_str(line);
                    e.push('\n');
                }
                "importers" => {
                    let e = lock.importers.get_mut(key)?;
                    e.text.push_str(line);
                    e.text.push('\n');
                    // `      name:` then `        version: x`.
                    if indent == 6 {
                        pending_name = Some(unquote(body.strip_suffix(':').unwrap_or(body)));
                    } else if indent == 8 {
                        if let (Some(name), Some(v)) =
                            (&pending_name, body.strip_prefix("version:"))
                        {
                            e.deps.push((name.clone(), unquote(v)));
                        }
                    }
                }
                _ => {
                    let e = lock.snapshots.get_mut(key)?;
                    e.text.push_str(line);
                    e.text.push('\n');
                    // `    dependencies:` then `      name: version`.
                    if indent == 6 {
                        if let Some((name, v)) = body.split_once(": ") {
                            e.deps.push((unquote(name), unquote(v)));
                        }
                    }
                }
            }
        }
        (!lock.importers.is_empty()).then_some(lock)
    }

    /// The importers `package` can reach: its own (if it is one), the
    /// root's, and those of workspace packages linked from them, transitively.
    fn reachable_importers(&self, package: &str) -> BTreeSet<String> {
        let start = if package.is_empty() { "." } else { package };
        let mut seen = BTreeSet::new();
        let mut todo = vec![".".to_string(), start.to_string()];
        while let Some(imp) = todo.pop() {
            let Some(entry) = self.importers.get(&imp) else {
                continue;
            };
            if !seen.insert(imp.clone()) {
                continue;
            }
            for (_, version) in &entry.deps {
                if let Some(link) = version.strip_prefix("link:") {
                    todo.push(normalize_join(&imp, link));
                }
            }
        }
        seen
    }

    /// BLAKE3 over the header, the reachable importers and the closure of
    /// the snapshots (and package metadata) they depend on.
    pub fn slice_digest(&self, package: &str) -> String {
        let importers = self.reachable_importers(package);
        let mut snaps = BTreeSet::new();
        let mut todo: Vec<String> = importers
            .iter()
            .flat_map(|i| self.importers[i].deps.iter())
            .filter(|(_, v)| !v.starts_with("link:"))
            .map(|(n, v)| format!("{n}@{v}"))
            .collect();
        while let Some(key) = todo.pop() {
            let Some(entry) = self.snapshots.get(&key) else {
                continue;
            };
            if snaps.insert(key.clone()) {
                todo.extend(entry.deps.iter().map(|(n, v)| format!("{n}@{v}")));
            }
        }
        let mut h = blake3::Hasher::new();
        h.update(self.header.as_bytes());
        for i in &importers {
            h.update(b"\0importer\0");
            h.update(self.importers[i].text.as_bytes());
        }
        for s in &snaps {
            h.update(b"\0snapshot\0");
            h.update(self.snapshots[s].text.as_bytes());
            // `name@1.0.0(peer@2)` → metadata of `name@1.0.0`.
            let base = s.split_once('(').map_or(s.as_str(), |(b, _)| b);
            if let Some(meta) = self.packages.get(base) {
                h.update(b"\0package\0");
                h.update(meta.as_bytes());
            }
        }
        h.finalize().to_hex()[..32].to_string()
    }
}

/// `base` + `rel` for importer paths ("." is the root), normalized.
fn normalize_join(base: &str, rel: &str) -> String {
    let mut parts: Vec<&str> = if base == "." {
        vec![]
    } else {
        base.split('/').collect()
    };
    for seg in rel.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCK: &str = "lockfileVersion: '9.0'

settings:
  autoInstallPeers: true

importers:

  .:
    devDependencies:
      vite:
        specifier: 8.0.0
        version: 8.0.0

  packages/a:
    dependencies:
      left-pad:
        specifier: ^1.0.0
        version: 1.3.0

  packages/b:
    dependencies:
      '@x/a':
        specifier: workspace:*
        version: link:../a
      is-odd:
        specifier: ^3.0.0
        version: 3.0.1

  packages/c:
    dependencies:
      is-even:
        specifier: ^1.0.0
        version: 1.0.0

packages:

  is-even@1.0.0:
    resolution: {integrity: sha512-even}

  is-number@6.0.0:
    resolution: {integrity: sha512-num}

  is-odd@3.0.1:
    resolution: {integrity: sha512-odd}

  left-pad@1.3.0:
    resolution: {integrity: sha512-pad}

  vite@8.0.0:
    resolution: {integrity: sha512-vite}

snapshots:

  is-even@1.0.0: {}

  is-number@6.0.0: {}

  is-odd@3.0.1:
    dependencies:
      is-number: 6.0.0

  left-pad@1.3.0: {}

  vite@8.0.0: {}
";

    #[test]
    fn pnpm_slices_follow_links_and_snapshots() {
        let lock = PnpmLock::parse(LOCK).unwrap();
        assert_eq!(
            lock.reachable_importers("packages/b"),
            BTreeSet::from([".".into(), "packages/a".into(), "packages/b".into()])
        );
        let b = lock.slice_digest("packages/b");
        let c = lock.slice_digest("packages/c");
        // A change only c can reach leaves a and b alone.
        let changed = PnpmLock::parse(&LOCK.replace("sha512-even", "sha512-even2")).unwrap();
        assert_eq!(changed.slice_digest("packages/b"), b);
        assert_ne!(changed.slice_digest("packages/c"), c);
        // A transitive dependency of b's is.odd (is-number) counts for b.
        let changed = PnpmLock::parse(&LOCK.replace("sha512-num", "sha512-num2")).unwrap();
        assert_ne!(changed.slice_digest("packages/b"), b);
        assert_eq!(changed.slice_digest("packages/c"), c);
        // a's deps count for b (b links to a), the root's for everyone.
        let changed = PnpmLock::parse(&LOCK.replace("sha512-pad", "sha512-pad2")).unwrap();
        assert_ne!(changed.slice_digest("packages/b"), b);
        assert_eq!(changed.slice_digest("packages/c"), c);
        let changed = PnpmLock::parse(&LOCK.replace("sha512-vite", "sha512-vite2")).unwrap();
        assert_ne!(changed.slice_digest("packages/c"), c);
        // Settings are global.
        let changed =
            PnpmLock::parse(&LOCK.replace("autoInstallPeers: true", "autoInstallPeers: false"))
                .unwrap();
        assert_ne!(changed.slice_digest("packages/c"), c);
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
        let env = NodeEnv {
            module_dirs: find_module_dirs(r),
            manager: "pnpm".into(),
            node_version: "v1".into(),
            node_bin_dir: None,
            lock: Lock::None,
        };
        assert_eq!(env.module_dirs, vec!["".to_string(), "pkg".to_string()]);
        let scratch = tempfile::tempdir().unwrap();
        let s = scratch.path();
        let staged = env.stage(r, s, Path::new("/vbuild/ws"), true).unwrap();
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
            .stage(r, scratch2.path(), scratch2.path(), false)
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
}
