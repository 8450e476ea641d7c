//! The machine-readable side of a run: `--json` events (one object per
//! line on stdout) and the `--summary FILE` document. Both are described by
//! `schema/events/run-events.v1.schema.json`; a test validates what this
//! module writes against it, so change the two together.
use crate::action::{Outcome, State};
use serde::Serialize;
use vbuild_store::EntryKind;

/// Bump with the schema's `version` when a field changes meaning or goes.
pub const EVENTS_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Counts {
    pub hit: usize,
    pub remote_hit: usize,
    pub miss: usize,
    pub uncached: usize,
    pub failed: usize,
    pub cancelled: usize,
    pub skipped: usize,
    pub would_run: usize,
    pub not_run: usize,
}

impl Counts {
    pub fn total(&self) -> usize {
        self.hit
            + self.miss
            + self.uncached
            + self.failed
            + self.cancelled
            + self.skipped
            + self.would_run
            + self.not_run
    }

    pub fn add(&mut self, state: &State) {
        match state {
            State::Hit => self.hit += 1,
            State::RemoteHit => {
                self.hit += 1;
                self.remote_hit += 1;
            }
            State::Miss(_) => self.miss += 1,
            State::Uncached(_) => self.uncached += 1,
            State::Failed(_) => self.failed += 1,
            State::Cancelled(_) => self.cancelled += 1,
            State::Skipped(_) => self.skipped += 1,
            State::WouldRun(_) => self.would_run += 1,
            State::FileGroup => {}
        }
    }
}

/// One finished action, as `action_finished` and in the summary.
#[derive(Clone, Debug, Serialize)]
pub struct ActionRecord {
    pub label: String,
    /// hit | miss | uncached | failed | cancelled | skipped | would_run
    pub state: &'static str,
    /// Where a hit came from: "local" or "remote"; null otherwise.
    pub source: Option<&'static str>,
    pub reason: Option<String>,
    /// The action key (hex) the result is stored under, when known.
    pub key: Option<String>,
    pub duration_ms: u64,
    /// Bytes of output files restored into the workspace by a hit.
    pub bytes_restored: u64,
    pub warnings: Vec<String>,
}

impl ActionRecord {
    pub fn new(label: String, outcome: &Outcome) -> ActionRecord {
        let (state, source, reason) = match &outcome.state {
            State::Hit => ("hit", Some("local"), None),
            State::RemoteHit => ("hit", Some("remote"), None),
            State::Miss(r) => ("miss", None, Some(r.clone())),
            State::Uncached(r) => ("uncached", None, Some(r.clone())),
            State::Failed(r) => ("failed", None, Some(r.clone())),
            State::Cancelled(r) => ("cancelled", None, Some(r.clone())),
            State::Skipped(r) => ("skipped", None, Some(r.clone())),
            State::WouldRun(r) => ("would_run", None, Some(r.clone())),
            State::FileGroup => unreachable!("file groups are not reported as actions"),
        };
        let bytes_restored = match (&outcome.state, &outcome.outputs) {
            (State::Hit | State::RemoteHit, Some(tree)) => tree
                .entries()
                .iter()
                .map(|e| match &e.kind {
                    EntryKind::File { size, .. } => *size,
                    EntryKind::Symlink { .. } => 0,
                })
                .sum(),
            _ => 0,
        };
        ActionRecord {
            label,
            state,
            source,
            reason,
            key: outcome.key.clone(),
            duration_ms: outcome.duration.as_millis() as u64,
            bytes_restored,
            warnings: outcome.warnings.clone(),
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event<'a> {
    RunStarted {
        version: u32,
        total: usize,
        jobs: usize,
        dry_run: bool,
    },
    ActionStarted {
        label: &'a str,
    },
    ActionFinished {
        #[serde(flatten)]
        action: &'a ActionRecord,
        /// The action's logs, when `--output-logs` shows them (lossy UTF-8).
        #[serde(skip_serializing_if = "Option::is_none")]
        stdout: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        stderr: Option<String>,
    },
    RunFinished(&'a RunSummary),
}

/// The whole run: the `run_finished` event, and `--summary FILE`.
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    pub version: u32,
    pub duration_ms: u64,
    pub counts: Counts,
    pub failed: Vec<String>,
    /// Ctrl-C stopped the run.
    pub interrupted: bool,
    /// Present in `--summary FILE` only (the events already carry them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<ActionRecord>>,
}

pub fn line(event: &Event<'_>) -> String {
    let mut s = serde_json::to_string(event).expect("events serialize");
    s.push('\n');
    s
}
