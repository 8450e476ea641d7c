//! Action keys: a weak key over everything static, narrowed by a record of
//! what counted into a strong key (BuildXL's weak/strong fingerprints), and
//! the explanation of a miss by diffing against the last run.
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use vbuild_store::{Digest, EntryKind};

/// Bump when the encoding or the meaning of any field changes.
pub const KEY_VERSION: u32 = 3;

/// The static part of an action: what the weak key hashes. Never holds an
/// absolute path, so a copied workspace gets the same keys.
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
    pub deps: Vec<String>,
    pub sandbox: String,
    pub network: bool,
    /// Targets with `node_modules`: package manager, node version and the
    /// lockfile (slice) standing for the installed node_modules. Absent
    /// otherwise, so other targets' keys are unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<BTreeMap<String, String>>,
    /// `FORCE_COLOR`'s value when the caller set it (actions then get it
    /// instead of `NO_COLOR=1`; docs/guide.md, "Colour"). Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    /// `[workspace] inputs` patterns (their files are in the inputs).
    /// Skipped when empty, so other workspaces' keys are unchanged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workspace_inputs: Vec<String>,
    /// `cache = "always"`: a tool's disableCache() is overridden.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cache_always: bool,
}

use vbuild_ipc::EnvQuery;
/// A tracked environment value as it enters the key (secrets as a hash).
pub use vbuild_ipc::EnvValue;

/// What a run declared counts (the narrowing record stored under a weak
/// key): the static target config plus what the tool told the runner.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Input path prefixes (workspace-relative; "." is everything) that do not count.
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
    pub fn counts(&self, path: &str) -> bool {
        !self.ignored_inputs.iter().any(|p| {
            p == "."
                || path == p
                || path
                    .strip_prefix(p.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        })
    }

    /// Whether the contents (not just the name) of a counted path count.
    fn content_counts(&self, path: &str) -> bool {
        self.used_inputs
            .as_ref()
            .is_none_or(|used| used.binary_search_by(|u| u.as_str().cmp(path)).is_ok())
    }
}

/// Where tracked environment values come from (vbuild's own environment).
pub trait EnvSource {
    fn value(&self, name: &str) -> EnvValue;
    /// Every variable matching `query`, with its keyed value.
    fn matching(&self, query: &EnvQuery) -> BTreeMap<String, EnvValue>;
}

/// The values a record tracks, by name (pattern matches included).
pub fn env_values(record: &Record, env: &dyn EnvSource) -> BTreeMap<String, EnvValue> {
    let mut values: BTreeMap<String, EnvValue> = record
        .tracked_env
        .iter()
        .map(|n| (n.clone(), env.value(n)))
        .collect();
    for query in &record.env_patterns {
        values.extend(env.matching(query));
    }
    values
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

fn hash_json<T: Serialize>(tag: &str, value: &T) -> Digest {
    let mut h = blake3::Hasher::new();
    h.update(tag.as_bytes());
    h.update(&[0]);
    // serde_json of structs and BTreeMaps is deterministic: a canonical encoding.
    let bytes = serde_json::to_vec(value).expect("key parts serialize");
    h.update(&bytes);
    h.finalize().into()
}

pub fn weak_key(fixed: &StaticKey) -> Digest {
    hash_json("vbuild-weak", fixed)
}

/// The strong key for one record: the weak key plus the digests of the
/// inputs that count and the values of the env names it tracks.
pub fn strong_key(
    weak: &Digest,
    record: &Record,
    inputs: &BTreeMap<String, EntryKind>,
    env: &dyn EnvSource,
) -> Digest {
    let mut h = blake3::Hasher::new();
    h.update(b"vbuild-strong\0");
    h.update(weak.as_bytes());
    h.update(
        serde_json::to_string(record)
            .expect("record serializes")
            .as_bytes(),
    );
    for (path, entry) in inputs.iter().filter(|(p, _)| record.counts(p)) {
        h.update(&(path.len() as u64).to_le_bytes());
        h.update(path.as_bytes());
        if !record.content_counts(path) {
            h.update(b"n");
            continue;
        }
        match entry {
            EntryKind::File {
                digest, executable, ..
            } => {
                h.update(if *executable { b"x" } else { b"f" });
                h.update(digest.as_bytes());
            }
            EntryKind::Symlink { target } => {
                h.update(b"l");
                h.update(&(target.len() as u64).to_le_bytes());
                h.update(target.as_bytes());
            }
        }
    }
    h.update(b"\0env\0");
    h.update(
        serde_json::to_string(&env_values(record, env))
            .expect("env serializes")
            .as_bytes(),
    );
    h.finalize().into()
}

/// Why `now` misses where `before` was stored, most specific first.
pub fn explain(before: &KeyInputs, now: &KeyInputs) -> String {
    let (b, n) = (&before.fixed, &now.fixed);
    if b.version != n.version {
        return "vbuild's key format changed".into();
    }
    if b.platform != n.platform {
        return format!("platform changed ({} → {})", b.platform, n.platform);
    }
    if b.argv != n.argv {
        return "command changed".into();
    }
    if b.node != n.node {
        let (empty_b, empty_n) = (BTreeMap::new(), BTreeMap::new());
        let (bn, nn) = (
            b.node.as_ref().unwrap_or(&empty_b),
            n.node.as_ref().unwrap_or(&empty_n),
        );
        let what: Vec<&str> = bn
            .keys()
            .chain(nn.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|k| bn.get(*k) != nn.get(*k))
            .map(String::as_str)
            .collect();
        return format!("node toolchain changed ({})", what.join(", "));
    }
    for name in b.env.keys().chain(n.env.keys()).collect::<BTreeSet<_>>() {
        if b.env.get(name) != n.env.get(name) {
            return format!("env '{name}' changed in the target's config");
        }
    }
    if b.color != n.color {
        return "colour setting changed (FORCE_COLOR)".into();
    }
    let config = [
        ("srcs", b.srcs != n.srcs),
        ("workspace inputs", b.workspace_inputs != n.workspace_inputs),
        ("cache = \"always\"", b.cache_always != n.cache_always),
        ("outs", b.outs != n.outs),
        ("deps", b.deps != n.deps),
        ("pass_env", b.pass_env != n.pass_env),
        ("sandbox", b.sandbox != n.sandbox),
        ("network", b.network != n.network),
        ("working directory", b.cwd != n.cwd),
    ];
    if let Some((what, _)) = config.iter().find(|(_, changed)| *changed) {
        return format!("target config changed ({what})");
    }
    let names: BTreeSet<&String> = before
        .env_values
        .keys()
        .chain(now.env_values.keys())
        .collect();
    for name in names {
        let old = before.env_values.get(name).unwrap_or(&EnvValue::Absent);
        let new = now.env_values.get(name).unwrap_or(&EnvValue::Absent);
        if old != new {
            return format!("env '{name}' changed");
        }
    }
    let mut changes = Vec::new();
    let counted = |map: &BTreeMap<String, EntryKind>| -> BTreeMap<String, EntryKind> {
        map.iter()
            .filter(|(p, _)| before.record.counts(p))
            .map(|(p, e)| (p.clone(), e.clone()))
            .collect()
    };
    let (old, new) = (counted(&before.inputs), counted(&now.inputs));
    for (path, entry) in &new {
        match old.get(path) {
            None => changes.push(format!("'{path}' added")),
            Some(prev) if prev != entry => changes.push(format!("'{path}' modified")),
            _ => {}
        }
    }
    for path in old.keys().filter(|p| !new.contains_key(*p)) {
        changes.push(format!("'{path}' removed"));
    }
    match changes.len() {
        0 => "the previous entry is no longer in the cache".into(),
        1..=3 => changes.join(", "),
        more => format!("{} (+{} more)", changes[..3].join(", "), more - 3),
    }
}

pub fn platform() -> String {
    format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(byte: u8) -> EntryKind {
        EntryKind::File {
            digest: Digest([byte; 32]),
            size: 1,
            executable: false,
        }
    }

    fn sample() -> KeyInputs {
        KeyInputs {
            fixed: StaticKey {
                version: KEY_VERSION,
                platform: platform(),
                argv: vec!["true".into()],
                cwd: "pkg".into(),
                env: BTreeMap::new(),
                pass_env: vec![],
                srcs: vec!["**".into()],
                outs: vec![],
                deps: vec![],
                sandbox: "scratch".into(),
                network: false,
                node: None,
                color: None,
                workspace_inputs: vec![],
                cache_always: false,
            },
            inputs: BTreeMap::from([
                ("pkg/a".to_string(), file(1)),
                ("pkg/b".to_string(), file(2)),
            ]),
            env_values: BTreeMap::new(),
            record: Record::default(),
        }
    }

    struct NoEnv;
    impl EnvSource for NoEnv {
        fn value(&self, _: &str) -> EnvValue {
            EnvValue::Absent
        }
        fn matching(&self, _: &EnvQuery) -> BTreeMap<String, EnvValue> {
            BTreeMap::new()
        }
    }

    #[test]
    fn used_inputs_count_names_of_the_rest() {
        let k = sample();
        let weak = weak_key(&k.fixed);
        let record = Record {
            used_inputs: Some(vec!["pkg/a".into()]),
            ..Default::default()
        };
        let mut changed = k.inputs.clone();
        changed.insert("pkg/b".into(), file(9));
        assert_eq!(
            strong_key(&weak, &record, &k.inputs, &NoEnv),
            strong_key(&weak, &record, &changed, &NoEnv)
        );
        changed.insert("pkg/new".into(), file(9));
        assert_ne!(
            strong_key(&weak, &record, &k.inputs, &NoEnv),
            strong_key(&weak, &record, &changed, &NoEnv)
        );
    }

    #[test]
    fn ignored_inputs_do_not_change_strong_key() {
        let k = sample();
        let weak = weak_key(&k.fixed);
        let record = Record {
            ignored_inputs: vec!["pkg/b".into()],
            ..Default::default()
        };
        let mut changed = k.inputs.clone();
        changed.insert("pkg/b".into(), file(9));
        assert_eq!(
            strong_key(&weak, &record, &k.inputs, &NoEnv),
            strong_key(&weak, &record, &changed, &NoEnv)
        );
        let all = Record::default();
        assert_ne!(
            strong_key(&weak, &all, &k.inputs, &NoEnv),
            strong_key(&weak, &all, &changed, &NoEnv)
        );
    }

    #[test]
    fn explains_file_changes() {
        let before = sample();
        let mut now = sample();
        now.inputs.insert("pkg/a".into(), file(7));
        now.inputs.insert("pkg/c".into(), file(3));
        now.inputs.remove("pkg/b");
        assert_eq!(
            explain(&before, &now),
            "'pkg/a' modified, 'pkg/c' added, 'pkg/b' removed"
        );
        now.fixed.argv = vec!["false".into()];
        assert_eq!(explain(&before, &now), "command changed");
    }
}
