//! What a tool declared during one action; the orchestrator folds this into
//! the narrowed cache key and the action result.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::protocol::EnvQuery;

/// The recorded value of a tracked env read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EnvValue {
    /// The variable was not set. Recorded so that setting it later is a change.
    Absent,
    /// The value itself.
    Value(String),
    /// BLAKE3 hex of the value, for names matching a secret pattern: the
    /// cache and `vbuild why` can see that it changed without storing it.
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
    /// logs them as warnings). Never contain env values.
    pub refusals: Vec<String>,
}

impl Declarations {
    pub(crate) fn add_env_pattern(&mut self, query: EnvQuery, matched: BTreeSet<String>) {
        // The host env is fixed for the action, so a repeated query matches
        // the same set; keep one entry.
        if !self.env_patterns.iter().any(|p| p.query == query) {
            self.env_patterns.push(EnvPattern { query, matched });
        }
    }
}
