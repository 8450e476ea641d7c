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
    let mut wanted = vec![false; ws.targets.len()];
    for pattern in patterns {
        let mut any = false;
        for (i, t) in ws.targets.iter().enumerate() {
            if pattern.matches(&t.label) {
                wanted[i] = true;
                any = true;
            }
        }
        if !any {
            return Err(match pattern {
                Pattern::Target(l) => {
                    format!("no target {l} in the workspace; `vbuild query //...` lists them")
                }
                Pattern::Package(p) => format!("package //{p} has no targets"),
                Pattern::Recursive(p) => format!("no targets under //{p}"),
            });
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
