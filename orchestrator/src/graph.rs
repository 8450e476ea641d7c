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
