//! Runs the selected actions in dependency order on `jobs` worker threads.
//! One dispatcher owns the graph state; among ready actions it always picks
//! the first in topological order, so `-j 1` runs are fully deterministic.
use crate::action::{self, Ctx, Outcome, State};
use crate::report::Reporter;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use vbuild_store::Tree;

/// Set by Ctrl-C: no new action starts; running ones are killed.
pub static CANCELLED: AtomicBool = AtomicBool::new(false);

pub fn cancelled() -> bool {
    CANCELLED.load(Ordering::SeqCst)
}

struct Job {
    pos: usize,
    deps: Vec<Arc<Tree>>,
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
    let mut pending: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut ready: BTreeSet<usize> = (0..n).filter(|&p| pending[p] == 0).collect();
    let mut outputs: Vec<Option<Arc<Tree>>> = vec![None; n];
    let mut blocked: Vec<Option<String>> = vec![None; n];
    let mut failed = Vec::new();
    let jobs = ctx.opts.jobs.max(1);

    std::thread::scope(|scope| {
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let (done_tx, done_rx) = mpsc::channel::<(usize, Outcome)>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        for _ in 0..jobs.min(n) {
            let (job_rx, done_tx) = (job_rx.clone(), done_tx.clone());
            scope.spawn(move || loop {
                let job = job_rx.lock().expect("job queue").recv();
                let Ok(job) = job else { break };
                let outcome = if cancelled() {
                    Outcome::new(State::Skipped("cancelled".into()), Default::default())
                } else {
                    action::run(ctx, order[job.pos], &job.deps)
                };
                if done_tx.send((job.pos, outcome)).is_err() {
                    break;
                }
            });
        }
        drop(done_tx);

        let mut in_flight = 0;
        let mut stop = false;
        let mut settled = 0;
        while settled < n {
            while !stop && !cancelled() && in_flight < jobs {
                let Some(pos) = ready.pop_first() else { break };
                if let Some(why) = blocked[pos].take() {
                    // A dependency did not produce outputs: settle without running.
                    let state = if ctx.opts.dry_run {
                        State::WouldRun(why)
                    } else {
                        State::Skipped(why)
                    };
                    let outcome = Outcome::new(state, Default::default());
                    settled += 1;
                    settle(
                        ctx,
                        order,
                        pos,
                        outcome,
                        &dependents,
                        &mut pending,
                        &mut ready,
                        &mut outputs,
                        &mut blocked,
                        reporter,
                    );
                    continue;
                }
                let deps = deps[pos]
                    .iter()
                    .map(|&d| outputs[d].clone().expect("dep settled with outputs"))
                    .collect();
                job_tx.send(Job { pos, deps }).expect("workers alive");
                in_flight += 1;
            }
            if in_flight == 0 {
                break; // stopped after a failure, or nothing left that can run
            }
            let Ok((pos, outcome)) = done_rx.recv() else {
                break;
            };
            in_flight -= 1;
            settled += 1;
            if matches!(outcome.state, State::Failed(_)) {
                failed.push(ctx.ws.targets[order[pos]].label.to_string());
                stop = !ctx.opts.keep_going;
            }
            settle(
                ctx,
                order,
                pos,
                outcome,
                &dependents,
                &mut pending,
                &mut ready,
                &mut outputs,
                &mut blocked,
                reporter,
            );
        }
        drop(job_tx);
        reporter.not_run(n - settled);
    });
    failed
}

#[allow(clippy::too_many_arguments)]
fn settle(
    ctx: &Ctx,
    order: &[usize],
    pos: usize,
    outcome: Outcome,
    dependents: &[Vec<usize>],
    pending: &mut [usize],
    ready: &mut BTreeSet<usize>,
    outputs: &mut [Option<Arc<Tree>>],
    blocked: &mut [Option<String>],
    reporter: &mut Reporter,
) {
    let label = &ctx.ws.targets[order[pos]].label;
    reporter.action(label, &outcome);
    let why_blocked = match &outcome.state {
        State::Failed(_) => Some(format!("dependency {label} failed")),
        State::Skipped(_) => Some(format!("dependency {label} was skipped")),
        State::WouldRun(_) => Some(format!("dependency {label} would run")),
        _ => None,
    };
    outputs[pos] = outcome.outputs;
    for &d in &dependents[pos] {
        if blocked[d].is_none() {
            blocked[d] = why_blocked.clone();
        }
        pending[d] -= 1;
        if pending[d] == 0 {
            ready.insert(d);
        }
    }
}
