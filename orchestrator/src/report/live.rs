//! What is shown while actions run. On a terminal, an indicatif status
//! area (a header with done/total, hits and misses, then one line per
//! running action with its elapsed time) under the finished actions'
//! output. Elsewhere, a `running //x (30s)` line each time an action passes
//! another multiple of the notice interval, so a long action is never silent.
//!
//! A ticker thread does both: bars appear only for actions running longer
//! than [`BAR_AFTER`], so a run of a thousand hits never draws one.
use super::events::Counts;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An action gets a line in the status area once it has run this long.
const BAR_AFTER: Duration = Duration::from_millis(150);
const TICK: Duration = Duration::from_millis(100);

pub struct Running {
    since: Instant,
    bar: Option<ProgressBar>,
    /// Notices printed so far (non-terminal mode).
    notices: u32,
}

#[derive(Default)]
pub struct LiveState {
    pub counts: Counts,
    pub total: usize,
    pub running: HashMap<String, Running>,
}

pub struct Live {
    pub start: Instant,
    pub state: Mutex<LiveState>,
    multi: Option<MultiProgress>,
    header: Option<ProgressBar>,
    /// Without a terminal: print `running` notices at multiples of this.
    notice_every: Option<Duration>,
    stop: AtomicBool,
}

impl Live {
    pub fn new(progress: bool, notice_every: Option<Duration>) -> Arc<Live> {
        let (multi, header) = if progress {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
            let header = multi.add(ProgressBar::new_spinner());
            header.set_style(
                ProgressStyle::with_template("{spinner} {msg}  [{elapsed}]")
                    .expect("valid template"),
            );
            (Some(multi), Some(header))
        } else {
            (None, None)
        };
        Arc::new(Live {
            start: Instant::now(),
            state: Mutex::new(LiveState::default()),
            multi,
            header,
            notice_every: if progress { None } else { notice_every },
            stop: AtomicBool::new(false),
        })
    }

    /// Whether a ticker thread has anything to do.
    pub fn needs_ticker(&self) -> bool {
        self.multi.is_some() || self.notice_every.is_some()
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, LiveState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` with the status area hidden, so what it writes lands above.
    pub fn above<T>(&self, f: impl FnOnce() -> T) -> T {
        match &self.multi {
            Some(m) => m.suspend(f),
            None => f(),
        }
    }

    pub fn started(&self, label: &str) {
        self.lock().running.insert(
            label.to_string(),
            Running {
                since: Instant::now(),
                bar: None,
                notices: 0,
            },
        );
    }

    pub fn finished(&self, label: &str) {
        let running = self.lock().running.remove(label);
        if let (Some(multi), Some(bar)) = (&self.multi, running.and_then(|r| r.bar)) {
            bar.finish_and_clear();
            multi.remove(&bar);
        }
    }

    /// Removes the status area for good (end of run, or an exit).
    pub fn clear(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let mut state = self.lock();
        for (_, r) in state.running.iter_mut() {
            if let Some(bar) = r.bar.take() {
                bar.finish_and_clear();
            }
        }
        drop(state);
        if let Some(header) = &self.header {
            header.finish_and_clear();
        }
        if let Some(multi) = &self.multi {
            let _ = multi.clear();
        }
    }

    /// One tick: refresh the header, add bars for slow actions, print notices.
    fn tick(&self) {
        let mut state = self.lock();
        let now = Instant::now();
        let c = state.counts;
        let done = c.total() - c.not_run;
        let total = state.total;
        let running = state.running.len();
        if let (Some(multi), Some(header)) = (&self.multi, &self.header) {
            header.set_message(format!(
                "{done}/{total} done, {running} running: {} hit, {} ran{}",
                c.hit,
                c.miss + c.uncached,
                if c.failed > 0 {
                    format!(", {} failed", c.failed)
                } else {
                    String::new()
                }
            ));
            header.tick();
            for (label, r) in state.running.iter_mut() {
                if r.bar.is_none() && now.duration_since(r.since) >= BAR_AFTER {
                    let bar = multi.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template("  {spinner} {msg} ({elapsed})")
                            .expect("valid template"),
                    );
                    // Elapsed counts from when the action started, not from the bar.
                    let bar = bar.with_elapsed(now.duration_since(r.since));
                    bar.set_message(label.clone());
                    bar.enable_steady_tick(TICK);
                    r.bar = Some(bar);
                }
            }
        }
        if let Some(every) = self.notice_every {
            let mut lines = String::new();
            let mut due: Vec<(&String, &mut Running)> = state
                .running
                .iter_mut()
                .filter(|(_, r)| now.duration_since(r.since) >= every * (r.notices + 1))
                .collect();
            due.sort_by(|a, b| a.0.cmp(b.0));
            for (label, r) in due {
                r.notices += 1;
                let secs = (every * r.notices).as_secs_f64();
                lines.push_str(&format!("running   {label}  ({})\n", secs_text(secs)));
            }
            if !lines.is_empty() {
                use std::io::Write;
                let _ = std::io::stderr().lock().write_all(lines.as_bytes());
            }
        }
    }

    /// Starts the ticker thread (call when `needs_ticker`).
    pub fn spawn_ticker(self: &Arc<Live>) -> std::thread::JoinHandle<()> {
        let live = self.clone();
        std::thread::Builder::new()
            .name("vbuild-progress".into())
            .spawn(move || {
                while !live.stop.load(Ordering::SeqCst) {
                    live.tick();
                    // Woken early by `stop_ticker`: the end of a run never waits a tick.
                    std::thread::park_timeout(TICK);
                }
            })
            .expect("spawning the progress thread")
    }

    pub fn stop_ticker(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn secs_text(secs: f64) -> String {
    if secs.fract() == 0.0 {
        format!("{secs:.0}s")
    } else {
        format!("{secs:.1}s")
    }
}
