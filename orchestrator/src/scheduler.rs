//! Runs the selected actions in dependency order on `jobs` workers (the
//! calling thread is one of them). The graph state sits behind one mutex;
//! a worker that finishes an action settles it and takes the next ready one
//! itself, so a run of cache hits does not bounce every action between
//! threads. Among ready actions a worker takes the one heading the longest
//! chain of actions still to come (critical path first, so the last
//! minutes of a cold build are not one long chain on one core), ties and
//! `-j 1` in topological order, so `-j 1` runs are fully deterministic. A worker with
//! nothing ready resolves the sources of targets still to come (stat and
//! hash, through the stat cache) instead of sleeping.
use crate::action::{self, Ctx, Outcome, State};
use crate::report::Reporter;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use vbuild_store::Tree;

/// Set by Ctrl-C: no new action starts; running ones are killed.
pub static CANCELLED: AtomicBool = AtomicBool::new(false);

pub fn cancelled() -> bool {
    CANCELLED.load(Ordering::SeqCst)
}

struct Graph<'r> {
    deps: Vec<Vec<usize>>,
    dependents: Vec<Vec<usize>>,
    pending: Vec<usize>,
    /// (rank, position): the smallest rank runs first.
    ready: BTreeSet<(usize, usize)>,
    rank: Vec<usize>,
    outputs: Vec<Option<Arc<Tree>>>,
    blocked: Vec<Option<String>>,
    failed: Vec<String>,
    in_flight: usize,
    settled: usize,
    stop: bool,
    /// Workers waiting on the condvar.
    idle: usize,
    /// Every source has been resolved ahead (or claimed): idle workers sleep.
    prefetch_done: bool,
    reporter: &'r mut Reporter,
}

/// Runs `order` (topologically sorted target indexes); returns the labels
/// that failed.
pub fn run(ctx: &Ctx, order: &[usize], reporter: &mut Reporter) -> Vec<String> {
    let n = order.len();
    let pos_of: std::collections::HashMap<usize, usize> =
        order.iter().enumerate().map(|(p, &i)| (i, p)).collect();
    let deps: Vec<Vec<usize>> = order
        .iter()
        .map(|&i| ctx.ws.targets[i].deps.iter().map(|d| pos_of[d]).collect())
        .collect();
    let mut dependents = vec![Vec::new(); n];
    for (p, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependents[d].push(p);
        }
    }
    let pending: Vec<usize> = deps.iter().map(Vec::len).collect();
    let jobs = ctx.opts.jobs.max(1).min(n.max(1));
    let rank = ranks(&dependents, jobs);
    let ready: BTreeSet<(usize, usize)> = (0..n)
        .filter(|&p| pending[p] == 0)
        .map(|p| (rank[p], p))
        .collect();
    let graph = Mutex::new(Graph {
        deps,
        dependents,
        pending,
        ready,
        rank,
        outputs: vec![None; n],
        blocked: vec![None; n],
        failed: Vec::new(),
        in_flight: 0,
        settled: 0,
        stop: false,
        idle: 0,
        // A dry run explains; it has no use for sources nobody asks about.
        prefetch_done: ctx.opts.dry_run || jobs == 1,
        reporter,
    });
    let wake = Condvar::new();

    graph
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .reporter
        .run_started(
            order
                .iter()
                .filter(|&&i| !ctx.ws.targets[i].file_group)
                .count(),
        );
    std::thread::scope(|scope| {
        for w in 1..jobs {
            let (graph, wake) = (&graph, &wake);
            scope.spawn(move || {
                crate::profile::set_worker(w);
                worker(ctx, order, graph, wake)
            });
        }
        crate::profile::set_worker(0);
        worker(ctx, order, &graph, &wake);
    });
    let g = graph.into_inner().unwrap_or_else(|p| p.into_inner());
    g.failed
}

/// Scheduling rank of each position (topological order): with one job
/// none (topological order); with more, `usize::MAX` minus the length of
/// the longest chain of dependents it starts, so the action heading the
/// longest chain still to run is taken first.
fn ranks(dependents: &[Vec<usize>], jobs: usize) -> Vec<usize> {
    let n = dependents.len();
    if jobs <= 1 {
        return vec![0; n];
    }
    let mut height = vec![0usize; n];
    // Dependents come later in topological order: fill from the end.
    for p in (0..n).rev() {
        height[p] = 1 + dependents[p].iter().map(|&d| height[d]).max().unwrap_or(0);
    }
    height.into_iter().map(|h| usize::MAX - h).collect()
}

/// What a worker does next.
enum Next {
    Run(usize, Vec<Arc<Tree>>),
    Prefetch,
    Wait,
    Exit,
}

fn worker(ctx: &Ctx, order: &[usize], graph: &Mutex<Graph<'_>>, wake: &Condvar) {
    let lock = || graph.lock().unwrap_or_else(|p| p.into_inner());
    let mut g = lock();
    loop {
        let next = next_job(ctx, order, &mut g);
        match next {
            Next::Exit => {
                // Others may be waiting for the last settle: let them see it.
                wake.notify_all();
                return;
            }
            Next::Wait => {
                g.idle += 1;
                g = wake.wait(g).unwrap_or_else(|p| p.into_inner());
                g.idle -= 1;
            }
            Next::Prefetch => {
                drop(g);
                if !ctx.prefetch_one(order) {
                    g = lock();
                    g.prefetch_done = true;
                } else {
                    g = lock();
                }
            }
            Next::Run(pos, deps) => {
                g.in_flight += 1;
                let target = &ctx.ws.targets[order[pos]];
                let label = &target.label;
                if !target.file_group {
                    g.reporter.action_started(label);
                }
                drop(g);
                crate::profile::set_label(Some(label.to_string()));
                let mut outcome = if cancelled() {
                    Outcome::new(State::Cancelled("interrupted".into()), Default::default())
                } else {
                    action::run(ctx, order[pos], &deps)
                };
                crate::profile::set_label(None);
                // Ctrl-C killed it: that is not the action's failure.
                if cancelled() && matches!(outcome.state, State::Failed(_)) {
                    outcome.state = State::Cancelled("interrupted".into());
                }
                g = lock();
                g.in_flight -= 1;
                g.settled += 1;
                if matches!(outcome.state, State::Failed(_)) {
                    let label = ctx.ws.targets[order[pos]].label.to_string();
                    g.failed.push(label);
                    g.stop |= !ctx.opts.keep_going;
                }
                let newly_ready = settle(ctx, order, pos, outcome, &mut g);
                if g.idle > 0 && (newly_ready > 1 || g.stop || g.in_flight == 0) {
                    wake.notify_all();
                }
            }
        }
    }
}

/// Picks the next job under the lock. Blocked actions (a dependency did not
/// produce outputs) are settled on the spot without running.
fn next_job(ctx: &Ctx, order: &[usize], g: &mut Graph<'_>) -> Next {
    loop {
        if g.stop || cancelled() {
            return if g.in_flight == 0 {
                Next::Exit
            } else {
                Next::Wait
            };
        }
        let Some((_, pos)) = g.ready.pop_first() else {
            if g.in_flight == 0 {
                // Settled everything, or nothing left that can run.
                return Next::Exit;
            }
            return if g.prefetch_done {
                Next::Wait
            } else {
                Next::Prefetch
            };
        };
        if let Some(why) = g.blocked[pos].take() {
            let state = if ctx.opts.dry_run {
                State::WouldRun(why)
            } else {
                State::Skipped(why)
            };
            g.settled += 1;
            settle(ctx, order, pos, Outcome::new(state, Default::default()), g);
            continue;
        }
        let deps = g.deps[pos]
            .iter()
            .map(|&d| g.outputs[d].clone().expect("dep settled with outputs"))
            .collect();
        return Next::Run(pos, deps);
    }
}

/// Records an outcome, reports it, and releases its dependents; returns how
/// many became ready.
fn settle(ctx: &Ctx, order: &[usize], pos: usize, outcome: Outcome, g: &mut Graph<'_>) -> usize {
    let label = &ctx.ws.targets[order[pos]].label;
    g.reporter.action(label, &outcome);
    let why_blocked = match &outcome.state {
        State::Failed(_) => Some(format!("dependency {label} failed")),
        State::Skipped(_) => Some(format!("dependency {label} was skipped")),
        State::Cancelled(_) => Some(format!("dependency {label} was cancelled")),
        State::WouldRun(_) => Some(format!("dependency {label} would run")),
        _ => None,
    };
    g.outputs[pos] = outcome.outputs;
    let mut newly_ready = 0;
    for i in 0..g.dependents[pos].len() {
        let d = g.dependents[pos][i];
        if g.blocked[d].is_none() {
            g.blocked[d] = why_blocked.clone();
        }
        g.pending[d] -= 1;
        if g.pending[d] == 0 {
            let rank = g.rank[d];
            g.ready.insert((rank, d));
            newly_ready += 1;
        }
    }
    newly_ready
}

#[cfg(test)]
mod tests {
    use super::ranks;

    /// Positions 0 (alone), 1 → 2 → 3 (a chain): with two jobs the chain's
    /// head goes first; with one job, topological order.
    #[test]
    fn longest_chain_first_with_several_jobs() {
        let dependents = vec![vec![], vec![2], vec![3], vec![]];
        let r = ranks(&dependents, 2);
        assert!(r[1] < r[0] && r[1] < r[2] && r[2] < r[3]);
        assert_eq!(r[0], r[3], "two actions heading no chain tie");
        assert_eq!(ranks(&dependents, 1), vec![0; 4]);
    }
}
