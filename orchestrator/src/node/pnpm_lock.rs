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
    /// `reach` per package.
    reach: Mutex<HashMap<String, Arc<Vec<usize>>>>,
    graph: std::sync::OnceLock<Graph>,
    /// `merkle` per importer (None: it reaches a link cycle).
    merkle: std::sync::OnceLock<Vec<Option<[u8; 32]>>>,
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
            graph: Default::default(),
            merkle: Default::default(),
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
    /// root's, and those of workspace packages linked from them,
    /// transitively; sorted.
    pub(super) fn reachable_importers(&self, package: &str) -> Vec<&str> {
        let g = self.graph();
        self.reach(package)
            .iter()
            .map(|&i| g.names[i].as_str())
            .collect()
    }

    /// Indexes (into `Graph::names`) of the importers `package` reaches,
    /// sorted; once per package and run (each action's key and its
    /// node_modules staging ask).
    fn reach(&self, package: &str) -> Arc<Vec<usize>> {
        if let Some(r) = self.reach.lock().unwrap().get(package) {
            return r.clone();
        }
        let g = self.graph();
        let start = if package.is_empty() { "." } else { package };
        let mut seen = vec![false; g.names.len()];
        let mut todo: Vec<usize> = [".", start].iter().filter_map(|n| g.index(n)).collect();
        while let Some(i) = todo.pop() {
            if !std::mem::replace(&mut seen[i], true) {
                todo.extend(&g.links[i]);
            }
        }
        let r: Arc<Vec<usize>> = Arc::new((0..seen.len()).filter(|&i| seen[i]).collect());
        self.reach
            .lock()
            .unwrap()
            .insert(package.to_string(), r.clone());
        r
    }

    /// The importers as a graph, with one digest per importer: its block
    /// and the closure of the snapshots (and package metadata) it depends
    /// on. Built once per run, so a package's slice costs O(importers it
    /// reaches), not O(their snapshots).
    fn graph(&self) -> &Graph {
        self.graph.get_or_init(|| {
            let names: Vec<String> = self.importers.keys().cloned().collect();
            let index = |n: &str| names.binary_search_by(|x| x.as_str().cmp(n)).ok();
            let links = names
                .iter()
                .map(|imp| {
                    self.importers[imp]
                        .deps
                        .iter()
                        .filter_map(|(_, v)| v.strip_prefix("link:"))
                        .filter_map(|link| index(&normalize_join(imp, link)))
                        .collect()
                })
                .collect();
            let digests = names.iter().map(|imp| self.importer_digest(imp)).collect();
            Graph {
                header: *blake3::hash(self.header.as_bytes()).as_bytes(),
                names,
                links,
                digests,
            }
        })
    }

    fn importer_digest(&self, imp: &str) -> [u8; 32] {
        let entry = &self.importers[imp];
        let mut snaps = BTreeSet::new();
        let mut todo: Vec<String> = entry
            .deps
            .iter()
            .filter(|(_, v)| !v.starts_with("link:"))
            .map(|(n, v)| format!("{n}@{v}"))
            .collect();
        while let Some(key) = todo.pop() {
            let Some(snap) = self.snapshots.get(&key) else {
                continue;
            };
            if snaps.insert(key) {
                todo.extend(snap.deps.iter().map(|(n, v)| format!("{n}@{v}")));
            }
        }
        let mut h = blake3::Hasher::new();
        h.update(b"importer\0");
        h.update(entry.text.as_bytes());
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
        *h.finalize().as_bytes()
    }

    /// BLAKE3 over the header and, for each reachable importer, its name
    /// and digest (its block and its snapshot closure).
    pub fn slice_digest(&self, package: &str) -> String {
        let g = self.graph();
        let mut h = blake3::Hasher::new();
        h.update(&g.header);
        for &i in self.reach(package).iter() {
            h.update(b"\0");
            h.update(g.names[i].as_bytes());
            h.update(&g.digests[i]);
        }
        h.finalize().to_hex()[..32].to_string()
    }
}

impl PnpmLock {
    /// The slice digest as a Merkle hash over the `link:` graph: each
    /// importer's hash covers its own digest, `flags(importer)` (what the
    /// caller stages for it) and the hashes of the importers it links to,
    /// so every package's slice costs O(1) after one O(importers + links)
    /// pass (the set-based `slice_digest` is O(reach) per package, O(N²)
    /// over a deep workspace). A change anywhere in the reach changes it,
    /// as with the set. None when `package` reaches a link cycle: the
    /// caller falls back to `slice_digest`.
    pub fn merkle_slice(&self, package: &str, flags: &dyn Fn(&str) -> String) -> Option<String> {
        let g = self.graph();
        let m = self.merkle.get_or_init(|| merkle_all(g, flags));
        let mut h = blake3::Hasher::new();
        h.update(b"merkle\0");
        h.update(&g.header);
        let start = if package.is_empty() { "." } else { package };
        for name in [".", start] {
            if let Some(i) = g.index(name) {
                h.update(&m[i]?);
            }
        }
        Some(h.finalize().to_hex()[..32].to_string())
    }
}

/// Post-order over the link graph (iterative: chains can be long). A node
/// seen again while still open closes a cycle: it and every node that
/// reaches it get None.
fn merkle_all(g: &Graph, flags: &dyn Fn(&str) -> String) -> Vec<Option<[u8; 32]>> {
    let n = g.names.len();
    let mut out: Vec<Option<[u8; 32]>> = vec![None; n];
    // 0 unvisited, 1 open, 2 done.
    let mut state = vec![0u8; n];
    let mut poisoned = vec![false; n];
    for root in 0..n {
        if state[root] != 0 {
            continue;
        }
        let mut stack = vec![(root, 0usize)];
        state[root] = 1;
        while let Some(&mut (i, ref mut next)) = stack.last_mut() {
            if let Some(&c) = g.links[i].get(*next) {
                *next += 1;
                match state[c] {
                    0 => {
                        state[c] = 1;
                        stack.push((c, 0));
                    }
                    1 => poisoned[i] = true,
                    _ => poisoned[i] |= out[c].is_none(),
                }
                continue;
            }
            stack.pop();
            state[i] = 2;
            let children_ok = g.links[i].iter().all(|&c| out[c].is_some());
            if poisoned[i] || !children_ok {
                if let Some(&(parent, _)) = stack.last() {
                    poisoned[parent] = true;
                }
                continue;
            }
            let mut h = blake3::Hasher::new();
            h.update(&g.digests[i]);
            h.update(g.names[i].as_bytes());
            h.update(b"\0");
            h.update(flags(&g.names[i]).as_bytes());
            let mut kids: Vec<usize> = g.links[i].clone();
            kids.sort_unstable();
            kids.dedup();
            for c in kids {
                h.update(&out[c].expect("checked above"));
            }
            out[i] = Some(*h.finalize().as_bytes());
        }
    }
    out
}

/// Importers by index (sorted names), their resolved `link:` edges and
/// their digests.
struct Graph {
    header: [u8; 32],
    names: Vec<String>,
    links: Vec<Vec<usize>>,
    digests: Vec<[u8; 32]>,
}

impl Graph {
    fn index(&self, name: &str) -> Option<usize> {
        self.names.binary_search_by(|x| x.as_str().cmp(name)).ok()
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
            [".", "packages/a", "packages/b"]
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
        // The Merkle slice changes exactly where the set-based one does.
        let flags = |_: &str| String::new();
        let (mb, mc) = (
            lock.merkle_slice("packages/b", &flags).unwrap(),
            lock.merkle_slice("packages/c", &flags).unwrap(),
        );
        for (from, to, b_changes, c_changes) in [
            ("sha512-even", "sha512-even2", false, true),
            ("sha512-num", "sha512-num2", true, false),
            ("sha512-pad", "sha512-pad2", true, false),
            ("sha512-vite", "sha512-vite2", true, true),
        ] {
            let changed = PnpmLock::parse(&LOCK.replace(from, to)).unwrap();
            assert_eq!(
                changed.merkle_slice("packages/b", &flags).unwrap() != mb,
                b_changes,
                "{from}"
            );
            assert_eq!(
                changed.merkle_slice("packages/c", &flags).unwrap() != mc,
                c_changes,
                "{from}"
            );
        }
        // What the caller stages for an importer counts too.
        let other = PnpmLock::parse(LOCK).unwrap();
        let flags_a = |i: &str| {
            if i == "packages/a" {
                "nm".to_string()
            } else {
                String::new()
            }
        };
        assert_ne!(other.merkle_slice("packages/b", &flags_a).unwrap(), mb);
        // A link cycle: no Merkle hash (the caller falls back to the set).
        let cyclic = PnpmLock::parse(&LOCK.replace(
            "  packages/a:\n    dependencies:\n",
            "  packages/a:\n    dependencies:\n      '@x/b':\n        specifier: workspace:*\n        version: link:../b\n",
        ))
        .unwrap();
        assert_eq!(cyclic.merkle_slice("packages/b", &flags), None);
        assert!(cyclic.merkle_slice("packages/c", &flags).is_some());
        // Settings are global.
        let changed =
            PnpmLock::parse(&LOCK.replace("autoInstallPeers: true", "autoInstallPeers: false"))
                .unwrap();
        assert_ne!(changed.slice_digest("packages/c"), c);
    }
}
