//! Slicing `pnpm-lock.yaml` per package for the key.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

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
    /// `reachable_importers` per package: asked for each action's key and
    /// its node_modules staging, so computed once per package and run.
    reach: Mutex<HashMap<String, Arc<BTreeSet<String>>>>,
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
            reach: Mutex::default(),
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
    pub(super) fn reachable_importers(&self, package: &str) -> Arc<BTreeSet<String>> {
        if let Some(r) = self.reach.lock().unwrap().get(package) {
            return r.clone();
        }
        let r = Arc::new(self.compute_reach(package));
        self.reach
            .lock()
            .unwrap()
            .insert(package.to_string(), r.clone());
        r
    }

    fn compute_reach(&self, package: &str) -> BTreeSet<String> {
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
        for i in importers.iter() {
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
            *lock.reachable_importers("packages/b"),
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
}
