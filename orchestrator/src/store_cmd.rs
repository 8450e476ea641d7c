//! `vbuild store stats|gc`, the collection after a build, and `vbuild schema`.
use crate::cli::StoreCmd;
use anyhow::{Context, Result};
use std::path::Path;
use vbuild_store::{format_size, Store};

fn budget() -> Result<(u64, &'static str)> {
    vbuild_store::budget().map_err(anyhow::Error::msg)
}

pub fn run(command: StoreCmd) -> Result<u8> {
    let root = crate::store_root()?;
    match command {
        StoreCmd::Stats => {
            let (budget, from) = budget()?;
            println!("store:   {}", root.display());
            println!("budget:  {} ({from})", format_size(budget));
            let Some(store) = Store::open_existing(&root)
                .with_context(|| format!("opening the store at {}", root.display()))?
            else {
                println!("usage:   nothing yet (the store is created by the first build)");
                return Ok(0);
            };
            let (blobs, bytes) = store.cas.stats()?;
            let share = if budget > 0 {
                bytes as f64 * 100.0 / budget as f64
            } else {
                100.0
            };
            println!(
                "usage:   {} in {blobs} blobs ({share:.0}% of the budget)",
                format_size(bytes)
            );
            println!("entries: {}", store.action_cache.entry_count()?);
            Ok(0)
        }
        StoreCmd::Gc { max_size } => {
            let max = match max_size {
                Some(m) => m,
                None => budget()?.0,
            };
            let Some(store) = Store::open_existing(&root)? else {
                println!("no store at {}: nothing to collect", root.display());
                return Ok(0);
            };
            let report = vbuild_store::collect(&store, max)?;
            if report.busy {
                println!("another collection is running on this store; nothing done");
                return Ok(0);
            }
            println!(
                "removed {} entries and {} blobs: {} → {} (target {})",
                report.entries_removed,
                report.blobs_removed,
                format_size(report.bytes_before),
                format_size(report.bytes_after),
                format_size(max)
            );
            Ok(0)
        }
        StoreCmd::Verify { repair } => crate::store_verify(repair),
    }
}

/// After a build: keep the store within its budget. A failure here never
/// fails the build; it is reported.
pub fn after_build(store: &Store) {
    let budget = match budget() {
        Ok((b, _)) => b,
        Err(e) => {
            eprintln!("warning: {e:#}; the store was not collected");
            return;
        }
    };
    match store.after_build(budget) {
        Ok(Some(r)) if !r.busy => eprintln!(
            "vbuild: the store was over its budget of {}: removed {} entries and {} blobs ({} → {})",
            format_size(budget),
            r.entries_removed,
            r.blobs_removed,
            format_size(r.bytes_before),
            format_size(r.bytes_after)
        ),
        Ok(_) => {}
        Err(e) => eprintln!("warning: collecting the store: {e:#}"),
    }
}

/// The JSON Schemas vbuild ships, by file name.
pub const SCHEMAS: &[(&str, &str)] = &[
    (
        "vbuild.schema.json",
        include_str!("../../schema/json/vbuild.schema.json"),
    ),
    (
        "build.schema.json",
        include_str!("../../schema/json/build.schema.json"),
    ),
    (
        "run-events.v1.schema.json",
        include_str!("../../schema/events/run-events.v1.schema.json"),
    ),
];

pub fn write_schemas(dir: &Path) -> Result<u8> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in SCHEMAS {
        crate::report::write_atomic(&dir.join(name), text.as_bytes())?;
        println!("wrote {}", dir.join(name).display());
    }
    println!(
        "point editors at them with a first line such as\n  #:schema {}",
        dir.join("build.schema.json").display()
    );
    Ok(0)
}
