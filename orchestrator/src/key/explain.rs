//! Naming what changed between the entry of the last run and now.
use super::{EnvValue, KeyInputs};
use std::collections::{BTreeMap, BTreeSet};
use vbuild_store::EntryKind;

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
        ("optional_outs", b.optional_outs != n.optional_outs),
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
            .filter(|(p, _)| !before.record.ignores(p))
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
