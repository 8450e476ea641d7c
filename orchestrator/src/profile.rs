//! `--profile FILE`: a Chrome trace (the JSON that Perfetto and
//! chrome://tracing open) of one run, one track per worker thread.
//!
//! The span API is deliberately tiny so the steps of an action can be
//! marked wherever they live: `let _s = profile::span("lookup");` records
//! from here to the end of the scope on the calling worker's track. With no
//! `--profile` a span is one relaxed atomic load.
use serde_json::{json, Value};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

static ENABLED: AtomicBool = AtomicBool::new(false);
static EVENTS: Mutex<Vec<Recorded>> = Mutex::new(Vec::new());
static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

thread_local! {
    /// The worker this thread is (scheduler-assigned, 0 = the main thread).
    static WORKER: Cell<usize> = const { Cell::new(0) };
    /// The label of the action this thread is working on, for span args.
    static LABEL: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

struct Recorded {
    name: &'static str,
    label: Option<String>,
    worker: usize,
    start_us: f64,
    dur_us: f64,
}

/// Turns recording on (once, before the run starts).
pub fn enable() {
    START.get_or_init(Instant::now);
    ENABLED.store(true, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Names the calling thread's track.
pub fn set_worker(n: usize) {
    WORKER.with(|w| w.set(n));
}

/// The action the calling thread works on from now on (None: between actions).
pub fn set_label(label: Option<String>) {
    if enabled() {
        LABEL.with(|l| *l.borrow_mut() = label);
    }
}

/// Records the time until the guard drops as phase `name` of the current action.
pub fn span(name: &'static str) -> Span {
    Span {
        name,
        start: enabled().then(Instant::now),
    }
}

#[must_use = "a span measures until it is dropped"]
pub struct Span {
    name: &'static str,
    start: Option<Instant>,
}

impl Drop for Span {
    fn drop(&mut self) {
        let Some(start) = self.start else { return };
        let origin = *START.get().expect("enabled sets START");
        let rec = Recorded {
            name: self.name,
            label: LABEL.with(|l| l.borrow().clone()),
            worker: WORKER.with(Cell::get),
            start_us: start.saturating_duration_since(origin).as_secs_f64() * 1e6,
            dur_us: start.elapsed().as_secs_f64() * 1e6,
        };
        EVENTS.lock().unwrap_or_else(|p| p.into_inner()).push(rec);
    }
}

/// The trace of everything recorded so far, as Chrome trace JSON.
pub fn trace() -> Value {
    let events = EVENTS.lock().unwrap_or_else(|p| p.into_inner());
    let mut workers: Vec<usize> = events.iter().map(|e| e.worker).collect();
    workers.sort_unstable();
    workers.dedup();
    let mut out: Vec<Value> = vec![json!({
        "name": "process_name", "ph": "M", "pid": 1, "tid": 0,
        "args": {"name": "vbuild"}
    })];
    out.extend(workers.iter().map(|w| {
        json!({"name": "thread_name", "ph": "M", "pid": 1, "tid": w,
               "args": {"name": format!("worker {w}")}})
    }));
    out.extend(events.iter().map(|e| {
        let mut ev = json!({
            "name": e.name, "cat": "vbuild", "ph": "X", "pid": 1, "tid": e.worker,
            "ts": e.start_us, "dur": e.dur_us,
        });
        if let Some(label) = &e.label {
            ev["args"] = json!({ "label": label });
        }
        ev
    }));
    json!({ "traceEvents": out, "displayTimeUnit": "ms" })
}

/// Writes the trace to `path` (temp file + rename: never half-written).
pub fn write(path: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let bytes = serde_json::to_vec(&trace())?;
    crate::report::write_atomic(path, &bytes).context("--profile")
}
