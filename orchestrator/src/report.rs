//! What a run prints: one line per action on stderr, the action's own
//! stdout/stderr replayed byte-exact after it, and a summary.
use crate::action::{Outcome, State};
use std::io::Write;
use std::time::{Duration, Instant};
use vbuild_schema::Label;

#[derive(Default)]
struct Counts {
    hit: usize,
    remote_hit: usize,
    miss: usize,
    uncached: usize,
    failed: usize,
    skipped: usize,
    would_run: usize,
    not_run: usize,
}

pub struct Reporter {
    start: Instant,
    counts: Counts,
    /// Hit lines not yet written: a run of a thousand hits costs one write,
    /// not a thousand. Flushed before any other line, at least every
    /// [`HIT_FLUSH`], and at the end.
    pending: Vec<u8>,
    flushed: Instant,
}

/// The longest a hit line waits in [`Reporter::pending`].
const HIT_FLUSH: Duration = Duration::from_millis(100);

fn ms(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.2}s", d.as_secs_f64())
    }
}

impl Reporter {
    pub fn new() -> Reporter {
        Reporter {
            start: Instant::now(),
            counts: Counts::default(),
            pending: Vec::new(),
            flushed: Instant::now(),
        }
    }

    pub fn action(&mut self, label: &Label, outcome: &Outcome) {
        if outcome.state == State::FileGroup {
            // Not an action: only its warnings are worth a line.
            if !outcome.warnings.is_empty() {
                self.flush();
                for warning in &outcome.warnings {
                    eprintln!("warning: {label}: {warning}");
                }
            }
            return;
        }
        let c = &mut self.counts;
        let line = match &outcome.state {
            State::Hit => {
                c.hit += 1;
                format!("hit       {label}")
            }
            State::RemoteHit => {
                c.hit += 1;
                c.remote_hit += 1;
                format!("hit (remote) {label}  {}", ms(outcome.duration))
            }
            State::Miss(why) => {
                c.miss += 1;
                format!("miss      {label}  ({why})  {}", ms(outcome.duration))
            }
            State::Uncached(why) => {
                c.uncached += 1;
                format!("uncached  {label}  ({why})  {}", ms(outcome.duration))
            }
            State::Failed(why) => {
                c.failed += 1;
                format!("failed    {label}  ({why})  {}", ms(outcome.duration))
            }
            State::Skipped(why) => {
                c.skipped += 1;
                format!("skipped   {label}  ({why})")
            }
            State::WouldRun(why) => {
                c.would_run += 1;
                format!("would run {label}  ({why})")
            }
            State::FileGroup => unreachable!("returned above"),
        };
        let quiet = matches!(outcome.state, State::Hit)
            && outcome.warnings.is_empty()
            && outcome.stdout.is_empty()
            && outcome.stderr.is_empty();
        if quiet {
            let _ = writeln!(self.pending, "{line}");
            if self.flushed.elapsed() >= HIT_FLUSH {
                self.flush();
            }
            return;
        }
        self.flush();
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{line}");
        for warning in &outcome.warnings {
            let _ = writeln!(err, "warning: {label}: {warning}");
        }
        let _ = err.flush();
        if !outcome.stdout.is_empty() {
            let mut out = std::io::stdout().lock();
            if let Err(e) = outcome.stdout.write_to(&mut out) {
                replay_failed(label, "stdout", &e);
            }
            let _ = out.flush();
        }
        if let Err(e) = outcome.stderr.write_to(&mut err) {
            replay_failed(label, "stderr", &e);
        }
    }

    /// Writes the pending hit lines.
    pub fn flush(&mut self) {
        if !self.pending.is_empty() {
            let _ = std::io::stderr().lock().write_all(&self.pending);
            self.pending.clear();
        }
        self.flushed = Instant::now();
    }

    pub fn not_run(&mut self, n: usize) {
        self.counts.not_run += n;
    }

    pub fn summary(&mut self, failed: &[String]) {
        self.flush();
        let c = &self.counts;
        let total = c.hit + c.miss + c.uncached + c.failed + c.skipped + c.would_run + c.not_run;
        let hits = match c.remote_hit {
            0 => format!("{} hit", c.hit),
            n => format!("{} hit ({n} remote)", c.hit),
        };
        let mut parts = vec![hits, format!("{} miss", c.miss)];
        for (n, what) in [
            (c.uncached, "uncached"),
            (c.failed, "failed"),
            (c.skipped, "skipped"),
            (c.would_run, "would run"),
            (c.not_run, "not run"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        let plural = if total == 1 { "" } else { "s" };
        eprintln!(
            "vbuild: {total} action{plural} in {}: {}",
            ms(self.start.elapsed()),
            parts.join(", ")
        );
        if !failed.is_empty() {
            eprintln!("error: {} failed: {}", failed.len(), failed.join(" "));
        }
    }
}

/// A replayed log whose blob no longer matched its digest (the bytes
/// before the mismatch were written). Write errors (a closed pipe) are
/// not worth a message.
fn replay_failed(label: &Label, what: &str, e: &std::io::Error) {
    if e.kind() == std::io::ErrorKind::InvalidData {
        let _ = writeln!(
            std::io::stderr().lock(),
            "warning: {label}: the replayed {what} is incomplete: {e}; the next build that uses it finds it corrupt and runs the action again"
        );
    }
}
