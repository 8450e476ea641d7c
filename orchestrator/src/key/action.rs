//! [`ActionKey`]: the one place an action's key is built: its static part
//! and weak key, the records that narrow it (from this run's tool, from the
//! local cache, from a remote), the tracked env values, the strong keys.
//!
//! Narrowing may make a key more precise, never wrong. A record can only
//! narrow the target's *own sources* (files of its package matched by its
//! srcs): dependency outputs, file groups and workspace inputs always count
//! by content, since a tool's report covers only what it saw itself (a
//! Vite plugin's module graph does not show the config helper it loaded
//! from another package). A record that would ignore all of them, an empty
//! used set, a used set naming none of the inputs, or a report with refused
//! paths narrows nothing.
use super::{
    encode_strong, sandbox_name, weak_key, Counts, EnvSource, EnvValue, KeyInputs, Record,
    StaticKey, KEY_VERSION,
};
use crate::action::Ctx;
use crate::workspace::Target;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use vbuild_ipc::Declarations;
use vbuild_schema::SandboxSetting;
use vbuild_store::{Digest, EntryKind, StrongKey, WeakKey};

/// The key of one action: static part, inputs, and how records apply.
pub struct ActionKey<'a> {
    env: &'a dyn EnvSource,
    package: String,
    pass_env: Vec<String>,
    pub fixed: StaticKey,
    pub weak: WeakKey,
    pub sandbox: SandboxSetting,
    /// Every staged input, workspace-relative.
    pub inputs: BTreeMap<String, EntryKind>,
    /// The target's own sources: the inputs a record may narrow (unless a
    /// dependency output replaced one), see `narrowable`.
    own: Arc<BTreeMap<String, EntryKind>>,
}

impl<'a> ActionKey<'a> {
    /// `own` are the target's own matched sources (a subset of `inputs`,
    /// unless a dependency output replaced one).
    pub fn new(
        ctx: &'a Ctx<'a>,
        target: &Target,
        sandbox: SandboxSetting,
        inputs: BTreeMap<String, EntryKind>,
        own: Arc<BTreeMap<String, EntryKind>>,
    ) -> ActionKey<'a> {
        let fixed = static_key(ctx, target, sandbox);
        Self::of_parts(ctx, fixed, sandbox, inputs, own)
    }

    /// From a built static key (`new`, and tests).
    pub(super) fn of_parts(
        env: &'a dyn EnvSource,
        fixed: StaticKey,
        sandbox: SandboxSetting,
        inputs: BTreeMap<String, EntryKind>,
        own: Arc<BTreeMap<String, EntryKind>>,
    ) -> ActionKey<'a> {
        let package = fixed.cwd.clone();
        ActionKey {
            env,
            pass_env: fixed.pass_env.clone(),
            package,
            weak: weak_key(&fixed),
            fixed,
            sandbox,
            inputs,
            own,
        }
    }

    /// Whether a record may narrow this input: one of the target's own
    /// sources, in its package, not replaced by a dependency output.
    fn narrowable(&self, path: &str) -> bool {
        self.own
            .get(path)
            .is_some_and(|e| self.inputs.get(path) == Some(e))
            && in_package(&self.package, path)
    }

    /// Keys the action for another sandbox (namespaces fell back to
    /// scratch); false when it is the same one.
    pub fn resandbox(&mut self, ctx: &Ctx, target: &Target, sandbox: SandboxSetting) -> bool {
        if sandbox == self.sandbox {
            return false;
        }
        self.sandbox = sandbox;
        self.fixed = static_key(ctx, target, sandbox);
        self.weak = weak_key(&self.fixed);
        true
    }

    /// The record of a run whose tool declared nothing.
    pub fn default_record(&self) -> Record {
        self.confine(Record::default())
    }

    /// The record of a run: the target's pass_env plus what the tool declared.
    pub fn record_of(&self, decl: &Declarations) -> Record {
        let used = match (&decl.used_inputs, decl.used_inputs_refused) {
            (Some(used), false) => Some(used.iter().cloned().collect()),
            // A report with refused paths may have named real inputs in a
            // form vbuild could not map: it cannot prove anything unread.
            _ => None,
        };
        self.confine(Record {
            ignored_inputs: decl.ignored_inputs.iter().cloned().collect(),
            tracked_env: decl.tracked_env.keys().cloned().collect(),
            env_patterns: decl.env_patterns.iter().map(|p| p.query.clone()).collect(),
            used_inputs: used,
        })
    }

    /// What a record (from this run, the local cache or a remote) may
    /// really narrow here. Canonical (sorted, deduplicated) and idempotent,
    /// so a stored confined record gives the same strong key again.
    pub fn confine(&self, r: Record) -> Record {
        let package = &self.package;
        let mut ignored: Vec<String> = r
            .ignored_inputs
            .into_iter()
            // Only prefixes inside the package can narrow anything; the
            // others would just hide changes from `vbuild why`.
            .filter(|p| in_package(package, p) && p != "." && !covers_package(p, package))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let probe = Record {
            ignored_inputs: ignored.clone(),
            ..Record::default()
        };
        let mut own = self.own.keys().filter(|p| self.narrowable(p)).peekable();
        if !ignored.is_empty() && own.peek().is_some() && own.all(|p| probe.ignores(p)) {
            ignored.clear();
        }
        let used: Option<Vec<String>> = r.used_inputs.map(|u| {
            u.into_iter()
                .filter(|p| self.inputs.contains_key(p))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        });
        let mut tracked: BTreeSet<String> = r.tracked_env.into_iter().collect();
        tracked.extend(self.pass_env.iter().cloned());
        let patterns: BTreeSet<_> = r.env_patterns.into_iter().collect();
        Record {
            ignored_inputs: ignored,
            tracked_env: tracked.into_iter().collect(),
            env_patterns: patterns.into_iter().collect(),
            used_inputs: used.filter(|u| !u.is_empty()),
        }
    }

    /// The same record without its input narrowing: what a hit found
    /// through a remote's record is filled into the local cache under, so
    /// the local cache only ever narrows what a local run declared.
    pub fn unnarrowed(&self, r: &Record) -> Record {
        Record {
            ignored_inputs: vec![],
            used_inputs: None,
            ..r.clone()
        }
    }

    fn counts(&self, record: &Record, path: &str) -> Counts {
        // A record that narrows no input (what most tools declare) counts
        // every input by content, narrowable or not: decided here without
        // `narrowable`'s two map lookups per input (most of keying a hit).
        if record.ignored_inputs.is_empty() && record.used_inputs.is_none() {
            return Counts::Content;
        }
        if !self.narrowable(path) {
            Counts::Content
        } else if record.ignores(path) {
            Counts::No
        } else if record.uses(path) {
            Counts::Content
        } else {
            Counts::Name
        }
    }

    /// The strong key under a record (confined first, whatever its source).
    pub fn strong(&self, record: &Record) -> StrongKey {
        let record = self.confine(record.clone());
        let env = self.env_values(&record);
        let counts = |p: &str| self.counts(&record, p);
        StrongKey(Digest(super::hash_encoded(|buf| {
            encode_strong(&self.weak, &record, &self.inputs, &counts, &env, buf)
        })))
    }

    /// The values a record tracks, by name (pattern matches included).
    pub fn env_values(&self, record: &Record) -> BTreeMap<String, EnvValue> {
        env_values(record, self.env)
    }

    /// What a later miss is explained against.
    pub fn explanation(&self, record: &Record) -> KeyInputs {
        KeyInputs {
            fixed: self.fixed.clone(),
            inputs: self.inputs.clone(),
            env_values: self.env_values(record),
            record: record.clone(),
        }
    }
}

/// The values a record tracks, by name (pattern matches included).
pub(super) fn env_values(record: &Record, env: &dyn EnvSource) -> BTreeMap<String, EnvValue> {
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

fn in_package(package: &str, path: &str) -> bool {
    package.is_empty()
        || path
            .strip_prefix(package)
            .is_some_and(|r| r.starts_with('/'))
}

/// Whether ignoring `prefix` would ignore the whole package.
fn covers_package(prefix: &str, package: &str) -> bool {
    package == prefix
        || package
            .strip_prefix(prefix)
            .is_some_and(|r| r.starts_with('/'))
}

/// The names whose values always count: the target's and the workspace's pass_env.
pub fn pass_env_names(ctx: &Ctx, target: &Target) -> Vec<String> {
    let mut names: Vec<String> = target
        .pass_env
        .iter()
        .chain(&ctx.ws.def.pass_env)
        .cloned()
        .collect();
    names.sort();
    names.dedup();
    names
}

fn static_key(ctx: &Ctx, target: &Target, sandbox: SandboxSetting) -> StaticKey {
    StaticKey {
        version: KEY_VERSION,
        platform: super::platform(),
        argv: target.argv.clone(),
        cwd: target.label.package.clone(),
        env: target.env.clone(),
        pass_env: pass_env_names(ctx, target),
        srcs: target.src_patterns.clone(),
        outs: target.outs[..target.required_outs]
            .iter()
            .map(|o| o.text())
            .collect(),
        optional_outs: target.outs[target.required_outs..]
            .iter()
            .map(|o| o.text())
            .collect(),
        deps: target
            .deps
            .iter()
            .map(|&d| ctx.ws.targets[d].label.text())
            .collect(),
        sandbox: sandbox_name(sandbox).to_string(),
        network: target.network,
        node: ctx
            .node_env(target)
            .map(|n| n.key_part(&target.label.package)),
        workspace_inputs: ctx.ws.inputs.patterns.clone(),
        cache_always: target.cache == vbuild_schema::CacheSetting::Always,
        color: ctx.opts.force_color.clone(),
    }
}
