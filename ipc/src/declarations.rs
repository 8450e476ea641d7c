//! What a tool declared during one action; the orchestrator folds this into
//! the narrowed cache key and the action result.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::limits::{
    MAX_ENV_PATTERNS, MAX_IGNORED, MAX_KEPT_BYTES, MAX_TRACKED_ENV, MAX_USED_INPUTS,
};
use crate::protocol::EnvQuery;

/// The recorded value of a tracked env read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EnvValue {
    /// The variable was not set. Recorded so that setting it later is a change.
    Absent,
    /// The value itself. No longer recorded (every present value is
    /// [`EnvValue::Hashed`]); kept so that entries written by older
    /// versions still parse.
    Value(String),
    /// BLAKE3 hex of the value: the cache and `vbuild why` can see that it
    /// changed without storing it (the cache database, the explain blob and
    /// the remote never hold a tracked value).
    Hashed(String),
}

/// A tracked `getEnvs` query and every name it matched at the time. At
/// lookup the orchestrator re-runs the query: a different name set (a new
/// `VITE_FOO` appeared) is a change even though no recorded name changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvPattern {
    pub query: EnvQuery,
    pub matched: BTreeSet<String>,
}

/// Everything a tool told the runner during one action.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Declarations {
    /// Workspace-relative, normalized (`"."` is the workspace root).
    pub ignored_inputs: BTreeSet<String>,
    pub ignored_outputs: BTreeSet<String>,
    pub cache_disabled: bool,
    /// Tracked reads, by name. Untracked reads never appear here.
    pub tracked_env: BTreeMap<String, EnvValue>,
    /// Tracked `getEnvs` queries, each once, in first-seen order.
    pub env_patterns: Vec<EnvPattern>,
    /// Union of `reportUsedInputs`; `None` when the tool never reported.
    pub used_inputs: Option<BTreeSet<String>>,
    /// Some path of a `reportUsedInputs` was refused: the report may have
    /// named real inputs in a form the runner could not map, so it cannot
    /// prove any input unread (the orchestrator then narrows nothing by it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub used_inputs_refused: bool,
    /// Human-readable descriptions of refused requests (the orchestrator
    /// logs them as warnings): one line per kind of refusal, the first
    /// instance with a count of the others. Never contain env values.
    pub refusals: Vec<String>,
    /// What the bounds in [`crate::limits`] have used so far (public only
    /// so that `..Default::default()` works; its fields are private).
    #[serde(skip)]
    pub budget: Budget,
}

/// Accounting for [`crate::limits`]; not part of what is stored.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Budget {
    kept_bytes: usize,
    /// The tool reported more used inputs than are kept: none are used.
    used_overflow: bool,
    /// Per kind of refusal: index into `refusals`, first message, count.
    refused: BTreeMap<String, (usize, String, u64)>,
}

/// Whether a declaration was kept.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Kept {
    Yes,
    /// Over a bound; the text says what happened instead (for the reply).
    No(String),
}

impl Declarations {
    /// Records a refusal of kind `kind` (e.g. `ignoreInput`): the first one
    /// verbatim, later ones only counted, so a tool repeating a bad request
    /// costs one line.
    pub(crate) fn refuse(&mut self, kind: &str, message: &str) {
        match self.budget.refused.get_mut(kind) {
            Some((idx, first, count)) => {
                *count += 1;
                self.refusals[*idx] = format!("{first} (and {} more like it)", *count - 1);
            }
            None => {
                let idx = self.refusals.len();
                self.refusals.push(message.to_owned());
                self.budget
                    .refused
                    .insert(kind.to_owned(), (idx, message.to_owned(), 1));
            }
        }
    }

    fn take_bytes(&mut self, n: usize) -> bool {
        if self.budget.kept_bytes + n > MAX_KEPT_BYTES {
            return false;
        }
        self.budget.kept_bytes += n;
        true
    }

    /// A tracked read that cannot be kept would leave the key incomplete,
    /// so the run is not cached instead.
    fn uncacheable(&mut self, what: &str) -> Kept {
        self.cache_disabled = true;
        let message = format!("{what}; this run is not cached");
        self.refuse("limit: tracked env", &message);
        Kept::No(message)
    }

    pub(crate) fn ignore_input(&mut self, rel: String) -> Kept {
        self.ignore(rel, false)
    }

    pub(crate) fn ignore_output(&mut self, rel: String) -> Kept {
        self.ignore(rel, true)
    }

    /// Dropping an ignore only makes more paths count: safe.
    fn ignore(&mut self, rel: String, output: bool) -> Kept {
        let (kind, len) = match output {
            false => ("ignoreInput", self.ignored_inputs.len()),
            true => ("ignoreOutput", self.ignored_outputs.len()),
        };
        let set = if output {
            &self.ignored_outputs
        } else {
            &self.ignored_inputs
        };
        if set.contains(&rel) {
            return Kept::Yes;
        }
        if len >= MAX_IGNORED || !self.take_bytes(rel.len()) {
            let message = format!("{kind}: more than {MAX_IGNORED} paths (or {MAX_KEPT_BYTES} bytes); further ones are not applied");
            self.refuse(&format!("limit: {kind}"), &message);
            return Kept::No(message);
        }
        match output {
            false => self.ignored_inputs.insert(rel),
            true => self.ignored_outputs.insert(rel),
        };
        Kept::Yes
    }

    pub(crate) fn track_env(&mut self, name: String, value: EnvValue) -> Kept {
        let full = self.tracked_env.len() >= MAX_TRACKED_ENV;
        if !self.tracked_env.contains_key(&name) && (full || !self.take_bytes(name.len() + 64)) {
            return self.uncacheable(&format!(
                "more than {MAX_TRACKED_ENV} tracked env names (or {MAX_KEPT_BYTES} bytes)"
            ));
        }
        self.tracked_env.insert(name, value);
        Kept::Yes
    }

    pub(crate) fn add_env_pattern(&mut self, query: EnvQuery, matched: BTreeSet<String>) -> Kept {
        // The host env is fixed for the action, so a repeated query matches
        // the same set; keep one entry.
        if self.env_patterns.iter().any(|p| p.query == query) {
            return Kept::Yes;
        }
        let bytes = match &query {
            EnvQuery::Glob(t) | EnvQuery::Prefix(t) => t.len(),
        } + matched.iter().map(String::len).sum::<usize>();
        if self.env_patterns.len() >= MAX_ENV_PATTERNS || !self.take_bytes(bytes) {
            return self.uncacheable(&format!(
                "more than {MAX_ENV_PATTERNS} tracked getEnvs queries (or {MAX_KEPT_BYTES} bytes)"
            ));
        }
        self.env_patterns.push(EnvPattern { query, matched });
        Kept::Yes
    }

    /// Too many reported paths: the report is dropped for the rest of the
    /// action, so every staged input counts (the key is only less narrow).
    pub(crate) fn add_used_inputs(&mut self, paths: BTreeSet<String>) -> Kept {
        if self.budget.used_overflow {
            return Kept::No("reportUsedInputs: an earlier report was over the limit".into());
        }
        let used = self.used_inputs.get_or_insert_with(BTreeSet::new);
        let new: Vec<String> = paths.into_iter().filter(|p| !used.contains(p)).collect();
        let bytes: usize = new.iter().map(String::len).sum();
        if used.len() + new.len() > MAX_USED_INPUTS || !self.take_bytes(bytes) {
            self.budget.used_overflow = true;
            self.used_inputs = None;
            let message = format!(
                "reportUsedInputs: more than {MAX_USED_INPUTS} paths (or {MAX_KEPT_BYTES} bytes); \
                 the reports are dropped and every staged input counts"
            );
            self.refuse("limit: reportUsedInputs", &message);
            return Kept::No(message);
        }
        if let Some(used) = self.used_inputs.as_mut() {
            used.extend(new);
        }
        Kept::Yes
    }
}
