//! The local action cache side of an action: trying its records, restoring
//! a hit, explaining a miss, and the record a run stores.
use super::{Ctx, Outcome, State};
use crate::key::{self, KeyInputs, Record, StaticKey};
use crate::materialize;
use crate::workspace::Target;
use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use vbuild_ipc::Declarations;
use vbuild_store::{ActionResult, EntryKind, Tree};

/// The record to store: the target's pass_env plus what the tool declared.
pub(crate) fn narrowed_record(ctx: &Ctx, target: &Target, decl: &Declarations) -> Record {
    let mut tracked: BTreeSet<String> = ctx.pass_env_names(target).into_iter().collect();
    tracked.extend(decl.tracked_env.keys().cloned());
    Record {
        ignored_inputs: decl.ignored_inputs.iter().cloned().collect(),
        tracked_env: tracked.into_iter().collect(),
        env_patterns: decl.env_patterns.iter().map(|p| p.query.clone()).collect(),
        used_inputs: decl
            .used_inputs
            .as_ref()
            .map(|u| u.iter().cloned().collect()),
    }
}

/// Tries every record under `weak`; restores and returns the first hit.
/// An entry whose blobs are unusable is removed and noted in `unusable`.
pub(super) fn lookup(
    ctx: &Ctx,
    target: &Target,
    weak: &vbuild_store::Digest,
    inputs: &BTreeMap<String, EntryKind>,
    unusable: &mut Option<String>,
) -> Result<Option<Outcome>> {
    for (nth, text) in ctx
        .store
        .action_cache
        .records(weak)?
        .into_iter()
        .enumerate()
    {
        let record: Record = serde_json::from_str(&text).context("reading a narrowing record")?;
        let strong = key::strong_key(weak, &record, inputs, ctx);
        let Some(result) = ctx.store.action_cache.get(&strong)? else {
            continue;
        };
        match restore(ctx, target, inputs, &result) {
            Ok(mut outcome) => {
                outcome.key = Some(strong);
                // Most recently used first; the first record needs no write.
                if nth > 0 {
                    ctx.store.action_cache.touch_record(weak, &text)?;
                }
                return Ok(Some(outcome));
            }
            Err(e) => {
                // Never trust an entry whose blobs are gone or corrupt.
                ctx.store.action_cache.remove(&strong)?;
                *unusable = Some(format!("cached entry unusable ({e:#})"));
            }
        }
    }
    Ok(None)
}

/// A hit: load the output tree and logs (verifying every blob), then make
/// the workspace match. Any missing or corrupt blob fails the restore.
pub(crate) fn restore(
    ctx: &Ctx,
    target: &Target,
    inputs: &BTreeMap<String, EntryKind>,
    result: &ActionResult,
) -> Result<Outcome> {
    let cas = &ctx.store.cas;
    let tree = Arc::new(Tree::from_bytes(&cas.read_verified(&result.output_tree)?)?);
    let mut outcome = Outcome::new(State::Hit, Duration::ZERO);
    if !ctx.opts.dry_run {
        // Verified in chunks and replayed from the store: a hit with a
        // large log costs no memory for it.
        outcome.stdout = super::Log::verified_blob(cas, &result.stdout)?;
        outcome.stderr = super::Log::verified_blob(cas, &result.stderr)?;
        let _m = crate::profile::span("materialize");
        materialize::materialize(ctx.store, ctx.stat_cache, ctx.ws, target, inputs, &tree)?;
    }
    outcome.outputs = Some(tree);
    Ok(outcome)
}

pub(super) fn explain_miss(
    ctx: &Ctx,
    label: &str,
    fixed: &StaticKey,
    inputs: &BTreeMap<String, EntryKind>,
) -> Result<String> {
    let Some(last) = ctx.store.action_cache.last_run(ctx.ws.name(), label)? else {
        return Ok("no previous entry".into());
    };
    let Ok(bytes) = ctx.store.cas.read_verified(&last.explain) else {
        return Ok("no previous entry".into());
    };
    let before: KeyInputs =
        serde_json::from_slice(&bytes).context("reading a cached explanation")?;
    let now = KeyInputs {
        fixed: fixed.clone(),
        inputs: inputs.clone(),
        env_values: key::env_values(&before.record, ctx),
        record: before.record.clone(),
    };
    Ok(key::explain(&before, &now))
}
