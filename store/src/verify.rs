//! `vbuild store verify`: every blob hashes to its name, every entry and
//! record parses, an entry's output tree and a last run's key description
//! (rows, not blobs) hash to the digests stored with them, every entry points only at blobs
//! that are present and sound, and
//! SQLite's own integrity check passes (like `nix store verify
//! --check-contents`). With `repair`, what can be fixed is: bad blobs are
//! deleted, entries that need them and rows that do not parse are dropped
//! (the next build runs those actions again).
use crate::action_cache::{checked_explain, parse_result, parse_tree};
use crate::{Digest, Result, Store, StoreError};
use std::collections::HashSet;
use std::fs;
use std::path::Path;

/// What a verify found.
#[derive(Debug, Default)]
pub struct Report {
    pub blobs: u64,
    pub entries: u64,
    pub records: u64,
    /// One line per problem, saying what was done about it.
    pub problems: Vec<String>,
    /// Problems repaired (a subset of `problems`).
    pub repaired: u64,
}

/// Checks the whole store; `check_record` validates a narrowing record's
/// text (its format belongs to the orchestrator).
pub fn verify(
    store: &Store,
    repair: bool,
    check_record: &dyn Fn(&str) -> std::result::Result<(), String>,
) -> Result<Report> {
    let mut report = Report::default();
    let fixed = |done: bool| match (repair, done) {
        (false, _) => "",
        (true, true) => " (removed)",
        (true, false) => " (could not remove)",
    };
    let good = check_blobs(store, repair, &mut report)?;
    for problem in store.action_cache.integrity_problems()? {
        report.problems.push(format!(
            "database: {problem} (not repairable: remove cache.db)"
        ));
    }
    let present = |d: &Digest| *d == Digest::empty() || good.contains(d);
    for row in store.action_cache.raw_entries()? {
        report.entries += 1;
        let name = match Digest::from_slice(&row.strong_key) {
            Some(d) => format!("entry {} ({})", short(&d), row.label),
            None => format!("entry ({}) with a malformed key", row.label),
        };
        let problem = match entry_problem(&row, &present) {
            Some(p) => p,
            None if Digest::from_slice(&row.strong_key).is_none() => "malformed key".into(),
            None => continue,
        };
        let done = repair
            && store
                .action_cache
                .remove_raw(Some(&row.strong_key), None)
                .is_ok();
        report.repaired += done as u64;
        report
            .problems
            .push(format!("{name}: {problem}{}", fixed(done)));
    }
    // A last run's key description only explains a miss: a bad one drops
    // the pointer, not the entry.
    for run in store.action_cache.raw_last_runs()? {
        let Err(e) = checked_explain(&run.explain, &run.explain_doc) else {
            continue;
        };
        let why = match e {
            StoreError::Corrupt(why) => why,
            other => other.to_string(),
        };
        let done = repair
            && store
                .action_cache
                .remove_last_run(&run.scope, &run.label)
                .is_ok();
        report.repaired += done as u64;
        report
            .problems
            .push(format!("last run of {}: {why}{}", run.label, fixed(done)));
    }
    for (weak, text) in store.action_cache.raw_records()? {
        report.records += 1;
        let problem = match (Digest::from_slice(&weak), check_record(&text)) {
            (None, _) => "malformed weak key".to_string(),
            (_, Err(e)) => e,
            _ => continue,
        };
        let done = repair
            && store
                .action_cache
                .remove_raw(None, Some((&weak, &text)))
                .is_ok();
        report.repaired += done as u64;
        report
            .problems
            .push(format!("record: {problem}{}", fixed(done)));
    }
    Ok(report)
}

/// Why an entry is unusable, if it is.
fn entry_problem(
    row: &crate::action_cache::RawEntry,
    present: &dyn Fn(&Digest) -> bool,
) -> Option<String> {
    let result = match parse_result(&row.result) {
        Ok(r) => r,
        Err(e) => return Some(e.to_string()),
    };
    // The output tree is in the row, named by its digest: checked as a
    // blob is, by hashing.
    let tree = match parse_tree(&result, &row.tree) {
        Ok(t) => t,
        Err(StoreError::Corrupt(why)) => return Some(why),
        Err(e) => return Some(e.to_string()),
    };
    for (what, d) in [("stdout", &result.stdout), ("stderr", &result.stderr)]
        .into_iter()
        .chain(
            result
                .interleave
                .as_ref()
                .map(|d| ("stdout/stderr order", d)),
        )
    {
        if !present(d) {
            return Some(format!(
                "its {what} blob {} is missing or corrupt",
                short(d)
            ));
        }
    }
    for e in tree.entries() {
        if let crate::EntryKind::File { digest, .. } = &e.kind {
            if !present(digest) {
                return Some(format!(
                    "output {:?}: blob {} is missing or corrupt",
                    e.path,
                    short(digest)
                ));
            }
        }
    }
    None
}

/// Hashes every blob; returns the sound ones. Bad ones are reported (and
/// deleted with `repair`).
fn check_blobs(store: &Store, repair: bool, report: &mut Report) -> Result<HashSet<Digest>> {
    let mut good = HashSet::new();
    let cas_dir = store.root().join("cas");
    for shard in read_dir(&cas_dir)? {
        let shard_path = shard.path();
        if !shard_path.is_dir() {
            continue;
        }
        let prefix = shard.file_name().to_string_lossy().into_owned();
        for blob in read_dir(&shard_path)? {
            let path = blob.path();
            let rest = blob.file_name().to_string_lossy().into_owned();
            report.blobs += 1;
            let named = crate::cas::blob_name(&prefix, &rest);
            let problem = match named {
                None => format!("{} is not named by a digest", path.display()),
                Some(d) => match Digest::of_file(&path) {
                    Ok(actual) if actual == d => {
                        // A sound blob of the layout before schema v7 is
                        // not where reads look: it serves no entry.
                        if prefix.len() == crate::cas::SHARD_HEX {
                            good.insert(d);
                        }
                        continue;
                    }
                    Ok(_) => format!("blob {}: its bytes do not match its name", short(&d)),
                    Err(e) => format!("blob {}: {e}", short(&d)),
                },
            };
            let done = repair && fs::remove_file(&path).is_ok();
            report.repaired += done as u64;
            let what = match (repair, done) {
                (false, _) => "",
                (true, true) => " (removed)",
                (true, false) => " (could not remove)",
            };
            report.problems.push(format!("{problem}{what}"));
        }
    }
    Ok(good)
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    let io = |source| StoreError::Io {
        path: dir.to_path_buf(),
        source,
    };
    match fs::read_dir(dir) {
        // Sorted: the report lists problems in the same order every time.
        Ok(rd) => {
            let mut entries = rd.collect::<std::io::Result<Vec<_>>>().map_err(io)?;
            entries.sort_by_key(|e| e.file_name());
            Ok(entries)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(io(e)),
    }
}

fn short(d: &Digest) -> String {
    d.to_hex()[..12].to_string()
}
