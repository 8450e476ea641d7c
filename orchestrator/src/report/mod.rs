//! What a run prints: one line per action on stderr, the action's own
//! stdout/stderr replayed byte-exact after it (as `--output-logs` allows),
//! a live status area on a terminal, and a summary. With `--json`, one
//! event per line on stdout instead (`events.rs`).
mod events;
mod live;

pub use events::EVENTS_VERSION;

use crate::action::{Outcome, State};
use events::{ActionRecord, Counts, Event, RunSummary};
use live::Live;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vbuild_schema::Label;

/// Which actions' logs are replayed (turbo's names).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutputLogs {
    /// Every action's, hits included.
    #[default]
    Full,
    /// Only actions that ran (not hits).
    NewOnly,
    /// Only failed actions'.
    ErrorsOnly,
    /// None: status lines only.
    None,
}

impl OutputLogs {
    fn shows(self, state: &State) -> bool {
        match self {
            OutputLogs::Full => true,
            OutputLogs::NewOnly => !matches!(state, State::Hit | State::RemoteHit),
            OutputLogs::ErrorsOnly => matches!(state, State::Failed(_) | State::Cancelled(_)),
            OutputLogs::None => false,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct ReportOptions {
    pub json: bool,
    pub output_logs: OutputLogs,
    /// Draw the live status area (stderr is a terminal).
    pub progress: bool,
    /// Colour vbuild's own status words.
    pub color: bool,
    /// Without the status area: a `running` line at multiples of this.
    pub running_notice: Option<Duration>,
    pub summary_file: Option<PathBuf>,
    /// `vbuild why`: no summary line.
    pub dry_run: bool,
    pub jobs: usize,
}

/// What the Ctrl-C handler can reach: the live counts of the current run.
static ACTIVE: Mutex<Option<Arc<Shared>>> = Mutex::new(None);
/// Held while a summary is printed; true once one was: a second Ctrl-C
/// during the normal summary waits for it instead of cutting it off.
static SUMMARY_PRINTED: Mutex<bool> = Mutex::new(false);

struct Shared {
    live: Arc<Live>,
    opts: ReportOptions,
    records: Mutex<Vec<ActionRecord>>,
}

pub struct Reporter {
    shared: Arc<Shared>,
    /// Hit lines not yet written: a run of a thousand hits costs one write,
    /// not a thousand. Flushed before any other line, at least every
    /// [`HIT_FLUSH`], and at the end.
    pending: Vec<u8>,
    flushed: Instant,
    ticker: Option<std::thread::JoinHandle<()>>,
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

/// The status word, padded to the column the label starts in.
fn status_word(state: &State, color: bool) -> String {
    let (word, code) = match state {
        State::Hit => ("hit      ", "32"),
        State::RemoteHit => ("hit (remote)", "32"),
        State::Miss(_) => ("miss     ", "33"),
        State::Uncached(_) => ("uncached ", "33"),
        State::Failed(_) => ("failed   ", "31"),
        State::Cancelled(_) => ("cancelled", "31"),
        State::Skipped(_) => ("skipped  ", "2"),
        State::WouldRun(_) => ("would run", "33"),
        State::FileGroup => ("", ""),
    };
    if color {
        format!("\x1b[{code}m{word}\x1b[0m")
    } else {
        word.to_string()
    }
}

fn status_line(label: &Label, outcome: &Outcome, color: bool) -> String {
    let word = status_word(&outcome.state, color);
    let d = ms(outcome.duration);
    match &outcome.state {
        State::Hit => format!("{word} {label}"),
        State::RemoteHit => format!("{word} {label}  {d}"),
        State::Miss(why) | State::Uncached(why) | State::Failed(why) | State::Cancelled(why) => {
            format!("{word} {label}  ({why})  {d}")
        }
        State::Skipped(why) | State::WouldRun(why) => format!("{word} {label}  ({why})"),
        State::FileGroup => String::new(),
    }
}

impl Reporter {
    pub fn new(opts: ReportOptions) -> Reporter {
        let progress = opts.progress && !opts.json;
        let notice = if opts.json || opts.dry_run {
            None
        } else {
            opts.running_notice
        };
        let live = Live::new(progress, notice);
        let ticker = live.needs_ticker().then(|| live.spawn_ticker());
        let shared = Arc::new(Shared {
            live,
            opts,
            records: Mutex::new(Vec::new()),
        });
        *ACTIVE.lock().unwrap_or_else(|p| p.into_inner()) = Some(shared.clone());
        Reporter {
            shared,
            pending: Vec::new(),
            flushed: Instant::now(),
            ticker,
        }
    }

    /// The run's size is known: announce it.
    pub fn run_started(&mut self, total: usize) {
        self.shared.live.lock().total = total;
        if self.shared.opts.json {
            self.shared.json(&Event::RunStarted {
                version: EVENTS_VERSION,
                total,
                jobs: self.shared.opts.jobs,
                dry_run: self.shared.opts.dry_run,
            });
        }
    }

    pub fn action_started(&mut self, label: &Label) {
        let text = label.to_string();
        if self.shared.opts.json {
            self.shared.json(&Event::ActionStarted { label: &text });
        }
        self.shared.live.started(&text);
    }

    pub fn action(&mut self, label: &Label, outcome: &Outcome) {
        if outcome.state == State::FileGroup {
            // Not an action: only its warnings are worth a line.
            if !outcome.warnings.is_empty() && !self.shared.opts.json {
                self.flush();
                self.shared.live.above(|| {
                    for warning in &outcome.warnings {
                        eprintln!("warning: {label}: {warning}");
                    }
                });
            }
            return;
        }
        let shared = self.shared.clone();
        let text = label.to_string();
        shared.live.finished(&text);
        shared.live.lock().counts.add(&outcome.state);
        let record = ActionRecord::new(text, outcome);
        let show_logs = shared.opts.output_logs.shows(&outcome.state);
        if shared.opts.json {
            let lossy = |log: &crate::action::Log| {
                (show_logs && !log.is_empty()).then(|| {
                    let mut bytes = Vec::new();
                    let _ = log.write_to(&mut bytes);
                    String::from_utf8_lossy(&bytes).into_owned()
                })
            };
            shared.json(&Event::ActionFinished {
                action: &record,
                stdout: lossy(&outcome.stdout),
                stderr: lossy(&outcome.stderr),
            });
        }
        let json = shared.opts.json;
        shared
            .records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(record);
        if json {
            return;
        }
        let line = status_line(label, outcome, shared.opts.color);
        let has_logs = show_logs && !(outcome.stdout.is_empty() && outcome.stderr.is_empty());
        let quiet = matches!(outcome.state, State::Hit) && outcome.warnings.is_empty() && !has_logs;
        if quiet {
            let _ = writeln!(self.pending, "{line}");
            if self.flushed.elapsed() >= HIT_FLUSH {
                self.flush();
            }
            return;
        }
        self.flush();
        shared.live.above(|| {
            let mut err = std::io::stderr().lock();
            let status = format!("{line}\n");
            if shared.opts.dry_run {
                // `why` answers a question: its answer goes to stdout.
                let _ = std::io::stdout().lock().write_all(status.as_bytes());
            } else {
                let _ = err.write_all(status.as_bytes());
            }
            for warning in &outcome.warnings {
                let _ = writeln!(err, "warning: {label}: {warning}");
            }
            let _ = err.flush();
            if show_logs {
                let mut out = std::io::stdout().lock();
                let (r_out, r_err) = crate::action::log::replay(
                    &outcome.stdout,
                    &outcome.stderr,
                    outcome.order.as_deref(),
                    &mut out,
                    &mut err,
                );
                let _ = out.flush();
                if let Err(e) = r_out {
                    replay_failed(label, "stdout", &e);
                }
                if let Err(e) = r_err {
                    replay_failed(label, "stderr", &e);
                }
            }
        });
    }

    /// Writes the pending hit lines.
    pub fn flush(&mut self) {
        if !self.pending.is_empty() {
            let pending = std::mem::take(&mut self.pending);
            let to_stdout = self.shared.opts.dry_run;
            self.shared
                .live
                .above(|| match to_stdout {
                    true => std::io::stdout().lock().write_all(&pending),
                    false => std::io::stderr().lock().write_all(&pending),
                })
                .ok();
        }
        self.flushed = Instant::now();
    }

    /// Ends the run: removes the status area, prints the summary (not for
    /// `why`) and writes `--summary FILE`.
    pub fn summary(&mut self, failed: &[String], interrupted: bool) -> anyhow::Result<()> {
        self.flush();
        self.shared.live.stop_ticker();
        if let Some(t) = self.ticker.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        self.shared.live.clear();
        *ACTIVE.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let mut printed = SUMMARY_PRINTED.lock().unwrap_or_else(|p| p.into_inner());
        *printed = true;
        self.shared.finish(failed, interrupted, false)
    }
}

impl Shared {
    fn json(&self, event: &Event<'_>) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(events::line(event).as_bytes());
        let _ = out.flush();
    }

    /// The summary line (or `run_finished` event) and the summary file.
    /// `abrupt`: a second Ctrl-C; actions still running count as cancelled.
    fn finish(&self, failed: &[String], interrupted: bool, abrupt: bool) -> anyhow::Result<()> {
        let failed_so_far: Vec<String>;
        let failed = if abrupt {
            let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
            failed_so_far = records
                .iter()
                .filter(|r| r.state == "failed")
                .map(|r| r.label.clone())
                .collect();
            &failed_so_far[..]
        } else {
            failed
        };
        let mut counts = {
            let state = self.live.lock();
            let mut c = state.counts;
            if abrupt {
                c.cancelled += state.running.len();
            }
            // Whatever did not finish never started (or, abruptly, still ran).
            c.not_run = state.total.saturating_sub(c.total());
            c
        };
        if self.opts.dry_run {
            counts.not_run = 0;
        }
        let summary = RunSummary {
            version: EVENTS_VERSION,
            duration_ms: self.live.start.elapsed().as_millis() as u64,
            counts,
            failed: failed.to_vec(),
            interrupted,
            actions: None,
        };
        if self.opts.json {
            self.json(&Event::RunFinished(&summary));
        } else if !self.opts.dry_run {
            eprint!(
                "{}",
                summary_text(&counts, self.live.start.elapsed(), failed)
            );
        }
        if let Some(path) = &self.opts.summary_file {
            let records = self
                .records
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let full = RunSummary {
                actions: Some(records),
                ..summary
            };
            write_atomic(path, &serde_json::to_vec_pretty(&full)?)?;
        }
        Ok(())
    }
}

fn summary_text(c: &Counts, elapsed: Duration, failed: &[String]) -> String {
    let total = c.total();
    let hits = match c.remote_hit {
        0 => format!("{} hit", c.hit),
        n => format!("{} hit ({n} remote)", c.hit),
    };
    let mut parts = vec![hits, format!("{} miss", c.miss)];
    for (n, what) in [
        (c.uncached, "uncached"),
        (c.failed, "failed"),
        (c.cancelled, "cancelled"),
        (c.skipped, "skipped"),
        (c.would_run, "would run"),
        (c.not_run, "not run"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    let plural = if total == 1 { "" } else { "s" };
    let mut text = format!(
        "vbuild: {total} action{plural} in {}: {}\n",
        ms(elapsed),
        parts.join(", ")
    );
    if !failed.is_empty() {
        text.push_str(&format!(
            "error: {} failed: {}\n",
            failed.len(),
            failed.join(" ")
        ));
    }
    text
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

/// Prints a line of vbuild's own above the status area (or plainly).
pub fn notice(text: &str) {
    let active = ACTIVE.lock().unwrap_or_else(|p| p.into_inner()).clone();
    match active {
        Some(shared) => shared.live.above(|| eprintln!("{text}")),
        None => eprintln!("{text}"),
    }
}

/// A second Ctrl-C: print what is known (running actions as cancelled)
/// before the process exits.
pub fn interrupted_exit_summary() {
    let mut printed = SUMMARY_PRINTED.lock().unwrap_or_else(|p| p.into_inner());
    let active = ACTIVE.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let (Some(shared), false) = (active, *printed) {
        shared.live.clear();
        let _ = shared.finish(&[], true, true);
        *printed = true;
    }
}

/// Writes `bytes` to `path` through a temp file in the same directory.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
