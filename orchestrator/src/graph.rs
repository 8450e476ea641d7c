//! The target graph: cycle detection and selecting what a run builds.
use crate::workspace::{Target, Workspace};
use vbuild_schema::Pattern;

/// A dependency cycle as target indexes (first edge first), if any.
pub fn find_cycle(targets: &[Target]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnStack,
        Done,
    }
    let mut mark = vec![Mark::New; targets.len()];
    for start in 0..targets.len() {
        if mark[start] != Mark::New {
            continue;
        }
        // Iterative DFS: (node, next dep index). The stack is the current path.
        let mut stack = vec![(start, 0usize)];
        mark[start] = Mark::OnStack;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&dep) = targets[node].deps.get(*next) {
                *next += 1;
                match mark[dep] {
                    Mark::New => {
                        mark[dep] = Mark::OnStack;
                        stack.push((dep, 0));
                    }
                    Mark::OnStack => {
                        let from = stack.iter().position(|&(n, _)| n == dep).unwrap_or(0);
                        return Some(stack[from..].iter().map(|&(n, _)| n).collect());
                    }
                    Mark::Done => {}
                }
            } else {
                mark[node] = Mark::Done;
                stack.pop();
            }
        }
    }
    None
}

/// The targets matching `patterns` plus everything they depend on, in a
/// topological order (deps first) that is deterministic: among ready
/// targets, label order.
pub fn select(ws: &Workspace, patterns: &[Pattern]) -> Result<Vec<usize>, String> {
    select_where(ws, patterns, |_| true)
}

/// Like [`select`], keeping only matched targets for which `keep` holds
/// (their deps are still added).
pub fn select_where(
    ws: &Workspace,
    patterns: &[Pattern],
    keep: impl Fn(usize) -> bool,
) -> Result<Vec<usize>, String> {
    let mut wanted = vec![false; ws.targets.len()];
    for pattern in patterns {
        let mut any = false;
        for (i, t) in ws.targets.iter().enumerate() {
            if pattern.matches(&t.label) {
                wanted[i] = keep(i);
                any = true;
            }
        }
        if !any {
            return Err(no_match(ws, pattern));
        }
    }
    let mut stack: Vec<usize> = (0..wanted.len()).filter(|&i| wanted[i]).collect();
    while let Some(i) = stack.pop() {
        for &d in &ws.targets[i].deps {
            if !wanted[d] {
                wanted[d] = true;
                stack.push(d);
            }
        }
    }
    Ok(topo_order(ws, &wanted))
}

fn topo_order(ws: &Workspace, wanted: &[bool]) -> Vec<usize> {
    let mut pending: Vec<usize> = ws.targets.iter().map(|t| t.deps.len()).collect();
    let mut dependents = vec![Vec::new(); ws.targets.len()];
    for (i, t) in ws.targets.iter().enumerate() {
        for &d in &t.deps {
            dependents[d].push(i);
        }
    }
    let mut ready: std::collections::BTreeSet<usize> = (0..wanted.len())
        .filter(|&i| wanted[i] && pending[i] == 0)
        .collect();
    let mut order = Vec::new();
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &j in &dependents[i] {
            pending[j] -= 1;
            if pending[j] == 0 && wanted[j] {
                ready.insert(j);
            }
        }
    }
    order
}

/// `vbuild query`: the targets matching `patterns` (not their deps), in
/// label order, as labels, JSON (with their deps) or a Graphviz graph.
pub fn query(ws: &Workspace, patterns: &[Pattern], output: crate::cli::QueryOutput) -> String {
    use crate::cli::QueryOutput;
    let mut matched: Vec<&Target> = ws
        .targets
        .iter()
        .filter(|t| patterns.iter().any(|p| p.matches(&t.label)))
        .collect();
    matched.sort_by_key(|t| t.label.to_string());
    let deps_of = |t: &Target| -> Vec<String> {
        let mut d: Vec<String> = t
            .deps
            .iter()
            .map(|&d| ws.targets[d].label.to_string())
            .collect();
        d.sort();
        d
    };
    match output {
        QueryOutput::Label => matched.iter().map(|t| format!("{}\n", t.label)).collect(),
        QueryOutput::Json => {
            let items: Vec<serde_json::Value> = matched
                .iter()
                .map(|t| {
                    serde_json::json!({
                        "label": t.label.to_string(),
                        "deps": deps_of(t),
                        "srcs": t.src_patterns,
                        "outs": t.outs.iter().map(|o| o.text()).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let mut s = serde_json::to_string_pretty(&items).expect("serializes");
            s.push('\n');
            s
        }
        QueryOutput::Dot => {
            let mut s = String::from("digraph vbuild {\n  rankdir=LR;\n");
            for t in &matched {
                s.push_str(&format!("  \"{}\";\n", t.label));
            }
            for t in &matched {
                for d in deps_of(t) {
                    s.push_str(&format!("  \"{}\" -> \"{d}\";\n", t.label));
                }
            }
            s.push_str("}\n");
            s
        }
    }
}

/// Why a pattern matched nothing, with the closest label when there is one
/// (`did you mean //app:build?`).
fn no_match(ws: &Workspace, pattern: &Pattern) -> String {
    let closest = |wanted: &str, candidates: &mut dyn Iterator<Item = String>| {
        candidates
            .map(|c| (edit_distance(wanted, &c), c))
            .filter(|(d, c)| *d <= 2.max(c.len() / 4))
            .min()
            .map(|(_, c)| c)
    };
    let hint = |found: Option<String>| match found {
        Some(l) => format!("; did you mean {l}?"),
        None => "; `vbuild query //...` lists them".to_string(),
    };
    match pattern {
        Pattern::Target(l) => {
            let found = closest(
                &l.to_string(),
                &mut ws.targets.iter().map(|t| t.label.to_string()),
            );
            format!("no target {l} in the workspace{}", hint(found))
        }
        Pattern::Package(p) => {
            let found = closest(p, &mut ws.packages.iter().cloned()).map(|p| format!("//{p}:all"));
            format!("package //{p} has no targets{}", hint(found))
        }
        Pattern::Recursive(p) => format!("no targets under //{p}{}", hint(None)),
        Pattern::Named { prefix, name } => {
            let mut names: Vec<String> = ws.targets.iter().map(|t| t.label.name.clone()).collect();
            names.sort();
            names.dedup();
            let found = closest(name, &mut names.into_iter());
            let place = if prefix.is_empty() {
                "in any package".to_string()
            } else {
                format!("under //{prefix}")
            };
            format!("no target named {name} {place}{}", hint(found))
        }
    }
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Targets whose package holds a file changed since `base` (committed,
/// staged, unstaged or untracked), plus every target depending on them.
/// A change to vbuild.toml, a lockfile or a workspace input affects all.
pub fn changed_since(ws: &Workspace, base: &str) -> Result<Vec<bool>, String> {
    let git = |args: &[&str]| -> Result<String, String> {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(&ws.root)
            .args(args)
            .output()
            .map_err(|e| format!("--since needs git: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "--since {base}: git {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let mut files: Vec<String> = Vec::new();
    for args in [
        &[
            "diff",
            "--name-only",
            "--relative",
            "--no-renames",
            base,
            "--",
        ][..],
        &["ls-files", "--others", "--exclude-standard"][..],
    ] {
        files.extend(git(args)?.lines().map(str::to_string));
    }
    let mut affected = vec![false; ws.targets.len()];
    let mut packages = std::collections::BTreeSet::new();
    let mut all = false;
    for f in &files {
        let name = f.rsplit('/').next().unwrap_or(f);
        let global = f == crate::workspace::WORKSPACE_FILE
            || matches!(
                name,
                "pnpm-lock.yaml" | "package-lock.json" | "yarn.lock" | "bun.lock" | "bun.lockb"
            ) && !f.contains('/')
            || ws.inputs.matcher.matches(f);
        if global {
            all = true;
            break;
        }
        let owner = ws
            .packages
            .iter()
            .filter(|p| p.is_empty() || f.starts_with(&format!("{p}/")))
            .max_by_key(|p| p.len());
        if let Some(p) = owner {
            packages.insert(p.clone());
        }
    }
    for (i, t) in ws.targets.iter().enumerate() {
        affected[i] = all || packages.contains(&t.label.package);
    }
    // Dependents, to a fixed point (targets are few; deps lists short).
    let mut grew = !all;
    while grew {
        grew = false;
        for (i, t) in ws.targets.iter().enumerate() {
            if !affected[i] && t.deps.iter().any(|&d| affected[d]) {
                affected[i] = true;
                grew = true;
            }
        }
    }
    Ok(affected)
}

#[cfg(test)]
mod tests {
    #[test]
    fn edit_distance() {
        assert_eq!(super::edit_distance("//app:biuld", "//app:build"), 2);
        assert_eq!(super::edit_distance("build", "build"), 0);
        assert_eq!(super::edit_distance("", "ab"), 2);
    }
}
