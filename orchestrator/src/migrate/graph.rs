//! The workspace dependency graph: which packages depend on which, from
//! `workspace:` ranges and ranges a local package's version satisfies;
//! cycles found, and broken only where the sources allow it.
use super::manifest::Manifest;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// An edge `from → to` (indexes into the package list).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Edge {
    pub from: usize,
    pub to: usize,
    pub dev: bool,
}

/// Whether `range` (as written in package.json) refers to the local
/// package of version `local`.
pub fn refers_to_local(range: &str, local: Option<&str>) -> bool {
    let range = range.trim();
    if range.starts_with("workspace:") || range.starts_with("link:") || range.starts_with("file:") {
        return true;
    }
    let Some(local) = local else {
        return range == "*" || range.is_empty();
    };
    let parse = |v: &str| -> Option<(u64, u64, u64)> {
        let v = v.trim().trim_start_matches('v');
        let core = v.split(['-', '+']).next()?;
        let mut it = core.split('.').map(|p| p.parse::<u64>().ok());
        Some((
            it.next()??,
            it.next().flatten().unwrap_or(0),
            it.next().flatten().unwrap_or(0),
        ))
    };
    let Some(have) = parse(local) else {
        return false;
    };
    range.split("||").any(|alt| {
        let alt = alt.trim();
        if alt == "*" || alt.is_empty() || alt == "latest" {
            return true;
        }
        if let Some(v) = alt.strip_prefix('^').and_then(parse) {
            return have >= v
                && if v.0 > 0 {
                    have.0 == v.0
                } else if v.1 > 0 {
                    have.0 == 0 && have.1 == v.1
                } else {
                    have == v
                };
        }
        if let Some(v) = alt.strip_prefix('~').and_then(parse) {
            return have >= v && have.0 == v.0 && have.1 == v.1;
        }
        if let Some(v) = alt.strip_prefix(">=").and_then(parse) {
            return have >= v;
        }
        parse(alt.trim_start_matches('=')).is_some_and(|v| v == have)
    })
}

/// Edges between workspace packages.
pub fn edges(manifests: &[Manifest]) -> Vec<Edge> {
    let by_name: BTreeMap<&str, usize> = manifests
        .iter()
        .enumerate()
        .filter_map(|(i, m)| Some((m.name.as_deref()?, i)))
        .collect();
    let mut out = Vec::new();
    for (from, m) in manifests.iter().enumerate() {
        for (name, (range, dev)) in &m.deps {
            if let Some(&to) = by_name.get(name.as_str()) {
                if to != from && refers_to_local(range, manifests[to].version.as_deref()) {
                    out.push(Edge {
                        from,
                        to,
                        dev: *dev,
                    });
                }
            }
        }
    }
    out.sort();
    out
}

/// The strongly connected components with more than one package (Tarjan).
pub fn cycles(n: usize, edges: &[Edge]) -> Vec<Vec<usize>> {
    struct State<'a> {
        adj: Vec<Vec<usize>>,
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
        _e: &'a [Edge],
    }
    fn visit(s: &mut State, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for w in s.adj[v].clone() {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                _ => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                comp.push(w);
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut adj = vec![Vec::new(); n];
    for e in edges {
        adj[e.from].push(e.to);
    }
    let mut s = State {
        adj,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
        _e: edges,
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    s.out.sort();
    s.out
}

/// Source files of a package (not tests, not node_modules/outputs) that
/// import `name`: `from 'name'`, `from 'name/...'`, `require('name')`,
/// `import('name')`.
pub fn importers_of(dir: &Path, name: &str, skip_dirs: &[String]) -> Vec<String> {
    let exts = [
        "js", "mjs", "cjs", "jsx", "ts", "mts", "cts", "tsx", "vue", "svelte",
    ];
    let mut found = Vec::new();
    let walker = walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            let n = e.file_name().to_string_lossy();
            e.depth() == 0
                || !(e.file_type().is_dir()
                    && (crate::workspace::skipped_dir(&n)
                        || skip_dirs.iter().any(|s| s == n.as_ref())
                        || n == "__tests__"
                        // Another package nested inside this one.
                        || e.path().join("package.json").is_file()))
        });
    for entry in walker.flatten() {
        let p = entry.path();
        let file = p.file_name().unwrap_or_default().to_string_lossy();
        let is_src = p
            .extension()
            .is_some_and(|e| exts.contains(&e.to_string_lossy().as_ref()));
        let is_test = file.contains(".test.") || file.contains(".spec.");
        if !entry.file_type().is_file() || !is_src || is_test {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(p) else {
            continue;
        };
        let hit = ['"', '\''].iter().any(|q| {
            text.contains(&format!("{q}{name}{q}")) || text.contains(&format!("{q}{name}/"))
        });
        if hit {
            found.push(
                p.strip_prefix(dir)
                    .unwrap_or(p)
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    found
}

/// Transitive dependencies of every package over `edges`.
pub fn closure(n: usize, edges: &[Edge]) -> Vec<BTreeSet<usize>> {
    let mut adj = vec![Vec::new(); n];
    for e in edges {
        adj[e.from].push(e.to);
    }
    (0..n)
        .map(|start| {
            let mut seen = BTreeSet::new();
            let mut todo = adj[start].clone();
            while let Some(v) = todo.pop() {
                if v != start && seen.insert(v) {
                    todo.extend(adj[v].iter().copied());
                }
            }
            seen
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_ranges() {
        assert!(refers_to_local("workspace:*", Some("1.0.0")));
        assert!(refers_to_local("^1.2.0", Some("1.4.0")));
        assert!(!refers_to_local("^2.0.0", Some("1.4.0")));
        assert!(refers_to_local("~1.4.0", Some("1.4.3")));
        assert!(!refers_to_local("~1.4.0", Some("1.5.0")));
        assert!(refers_to_local("1.0.0", Some("1.0.0")));
        assert!(!refers_to_local("npm:other@1", Some("1.0.0")));
    }

    #[test]
    fn finds_cycles() {
        let e = |from, to| Edge {
            from,
            to,
            dev: false,
        };
        let edges = vec![e(0, 1), e(1, 2), e(2, 0), e(3, 0)];
        assert_eq!(cycles(4, &edges), vec![vec![0, 1, 2]]);
        assert!(cycles(4, &edges[..2]).is_empty());
    }
}
