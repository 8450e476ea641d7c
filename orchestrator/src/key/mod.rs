//! Action keys, owned here and nowhere else: a weak key over everything
//! static, narrowed by a record of what counted into a strong key (BuildXL's
//! weak/strong fingerprints), and the explanation of a miss by diffing
//! against the last run.
//!
//! `encode`: the hand-written, versioned binary encoding every key field is
//! hashed in; `action`: [`ActionKey`], the one context that builds an
//! action's static part, its narrowing records and tracked env values;
//! `explain`: naming what changed.
mod action;
mod encode;
mod explain;
#[cfg(test)]
mod tests;

pub use action::{pass_env_names, ActionKey};
pub use explain::explain;

use encode::{hash_encoded, Enc, Sink};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use vbuild_ipc::EnvQuery;
/// A tracked environment value as it enters the key (secrets as a hash).
pub use vbuild_ipc::EnvValue;
use vbuild_schema::SandboxSetting;
use vbuild_store::{Digest, EntryKind, WeakKey};

/// Bump when the encoding or the meaning of any field changes.
/// 3: the hand-written encoding of `encode.rs`; narrowing confined.
/// 4: `NO_COLOR=1` in the fixed environment; `FORCE_COLOR` keyed (field 15).
pub const KEY_VERSION: u32 = 4;

/// The static part of an action: what the weak key hashes. Never holds an
/// absolute path, so a copied workspace gets the same keys. (Serialized
/// only into the explanation blob; the key is `encode_static`.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StaticKey {
    pub version: u32,
    pub platform: String,
    pub argv: Vec<String>,
    /// Package path: the working directory inside the sandbox.
    pub cwd: String,
    pub env: BTreeMap<String, String>,
    pub pass_env: Vec<String>,
    pub srcs: Vec<String>,
    pub outs: Vec<String>,
    /// `optional_outs`; absent when there are none, so other keys are
    /// unchanged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub optional_outs: Vec<String>,
    pub deps: Vec<String>,
    /// `sandbox_name` of the sandbox the action runs in.
    pub sandbox: String,
    pub network: bool,
    /// Targets with `node_modules`: package manager, node version and the
    /// lockfile (slice) standing for the installed node_modules. Absent
    /// otherwise, so other targets' keys are unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<BTreeMap<String, String>>,
    /// `[workspace] inputs` patterns (their files are in the inputs).
    #[serde(default)]
    pub workspace_inputs: Vec<String>,
    /// `cache = "always"`: a tool's disableCache() is overridden.
    #[serde(default)]
    pub cache_always: bool,
    /// `FORCE_COLOR`'s value when the caller set it (actions then get it
    /// instead of `NO_COLOR=1`; docs/guide.md, the environment). Absent
    /// otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
}

/// The sandbox as it is spelled in keys and explanations.
pub fn sandbox_name(sandbox: SandboxSetting) -> &'static str {
    match sandbox {
        SandboxSetting::Namespaces => "namespaces",
        SandboxSetting::Scratch => "scratch",
        SandboxSetting::None => "none",
    }
}

/// What a run declared counts (the narrowing record stored under a weak
/// key): the static target config plus what the tool told the runner.
/// Records are only ever used through [`ActionKey::confine`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Input path prefixes (workspace-relative) that do not count.
    pub ignored_inputs: Vec<String>,
    /// Env names whose values count.
    pub tracked_env: Vec<String>,
    /// `getEnvs` queries: the set of matching names and their values count,
    /// so a new matching variable is a change too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_patterns: Vec<EnvQuery>,
    /// The tool's exact set of files read: only their contents count; the
    /// names of all other staged inputs still count, so an added or removed
    /// file is a change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_inputs: Option<Vec<String>>,
}

impl Record {
    /// The text stored in the action cache and the remote records list.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("a record serializes")
    }

    /// Parses stored text; an error says what is wrong with it.
    pub fn from_text(text: &str) -> Result<Record, String> {
        serde_json::from_str(text).map_err(|e| format!("narrowing record: {e}"))
    }

    /// Whether an input under one of the ignored prefixes.
    pub fn ignores(&self, path: &str) -> bool {
        self.ignored_inputs.iter().any(|p| {
            path == p
                || path
                    .strip_prefix(p.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        })
    }

    fn uses(&self, path: &str) -> bool {
        self.used_inputs
            .as_ref()
            .is_none_or(|used| used.binary_search_by(|u| u.as_str().cmp(path)).is_ok())
    }

    fn encode<S: Sink>(&self, e: &mut Enc<S>) {
        e.field(1).strs(self.ignored_inputs.iter());
        e.field(2).strs(self.tracked_env.iter());
        e.field(3).list(self.env_patterns.len());
        for q in &self.env_patterns {
            match q {
                EnvQuery::Glob(g) => e.raw(b"G").str(g),
                EnvQuery::Prefix(p) => e.raw(b"P").str(p),
            };
        }
        e.field(4);
        match &self.used_inputs {
            None => e.absent(),
            Some(used) => e.strs(used.iter()),
        };
    }
}

/// Where tracked environment values come from (vbuild's own environment).
pub trait EnvSource {
    fn value(&self, name: &str) -> EnvValue;
    /// Every variable matching `query`, with its keyed value.
    fn matching(&self, query: &EnvQuery) -> BTreeMap<String, EnvValue>;
}

/// Everything needed to compute keys and to explain a later miss; stored as
/// a blob (the "explain" of a cache entry).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyInputs {
    pub fixed: StaticKey,
    /// Workspace-relative path → staged entry.
    pub inputs: BTreeMap<String, EntryKind>,
    /// Values of the env names a record tracks.
    pub env_values: BTreeMap<String, EnvValue>,
    pub record: Record,
}

/// The bytes the weak key hashes.
fn encode_static<S: Sink>(k: &StaticKey, out: &mut S) {
    let mut e = Enc { out };
    e.raw(b"vbuild-weak\0");
    e.field(1).u64(k.version as u64);
    e.field(2).str(&k.platform);
    e.field(3).strs(k.argv.iter());
    e.field(4).str(&k.cwd);
    e.field(5).str_map(k.env.iter());
    e.field(6).strs(k.pass_env.iter());
    e.field(7).strs(k.srcs.iter());
    e.field(8).strs(k.outs.iter());
    e.field(9).strs(k.deps.iter());
    e.field(10).str(&k.sandbox);
    e.field(11).bool(k.network);
    e.field(12);
    match &k.node {
        None => e.absent(),
        Some(node) => e.str_map(node.iter()),
    };
    e.field(13).strs(k.workspace_inputs.iter());
    e.field(14).bool(k.cache_always);
    e.field(15);
    match &k.color {
        None => e.absent(),
        Some(v) => e.str(v),
    };
    // Written only when set: keys of targets without it stay as they were.
    if !k.optional_outs.is_empty() {
        e.field(16).strs(k.optional_outs.iter());
    }
}

pub fn weak_key(fixed: &StaticKey) -> WeakKey {
    WeakKey(Digest(hash_encoded(|buf| encode_static(fixed, buf))))
}

/// How one input enters a strong key.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Counts {
    /// Left out (ignored).
    No,
    /// By name only (not in the tool's used set).
    Name,
    /// By name and content.
    Content,
}

/// The bytes a strong key hashes: the weak key, the record, every counted
/// input and the tracked env values. `counts` says how each input counts.
fn encode_strong<S: Sink>(
    weak: &WeakKey,
    record: &Record,
    inputs: &BTreeMap<String, EntryKind>,
    counts: &dyn Fn(&str) -> Counts,
    env: &BTreeMap<String, EnvValue>,
    out: &mut S,
) {
    let mut e = Enc { out };
    e.raw(b"vbuild-strong\0").digest(&weak.0);
    e.field(1);
    record.encode(&mut e);
    let counted: Vec<(&String, &EntryKind, Counts)> = inputs
        .iter()
        .map(|(p, k)| (p, k, counts(p)))
        .filter(|(_, _, c)| *c != Counts::No)
        .collect();
    e.field(2).list(counted.len());
    for (path, kind, how) in counted {
        e.str(path);
        match (how, kind) {
            (Counts::Name, _) | (Counts::No, _) => e.raw(b"n"),
            (
                Counts::Content,
                EntryKind::File {
                    digest, executable, ..
                },
            ) => e.raw(if *executable { b"x" } else { b"f" }).digest(digest),
            (Counts::Content, EntryKind::Symlink { target }) => e.raw(b"l").str(target),
        };
    }
    e.field(3).map(env.len());
    for (name, value) in env {
        e.str(name);
        match value {
            EnvValue::Absent => e.raw(b"a"),
            EnvValue::Value(v) => e.raw(b"v").str(v),
            EnvValue::Hashed(h) => e.raw(b"h").str(h),
        };
    }
}

pub fn platform() -> String {
    format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}
