//! Writing (or, with `--dry-run`, printing) a plan, and the summary.
use super::{plan, Options};
use anyhow::{bail, Context, Result};
use std::path::Path;

/// `vbuild migrate`: plan, then write (or print, with `--dry-run`), then
/// summarize. Returns the exit code.
pub fn run(root: &Path, opts: &Options) -> Result<u8> {
    let plan = plan(root).with_context(|| format!("migrating {}", root.display()))?;
    let mut out = String::new();
    let mut written = Vec::new();
    let mut kept = Vec::new();
    for f in &plan.files {
        let path = root.join(&f.path);
        if opts.dry_run {
            out.push_str(&format!(
                "--- {}{}\n{}",
                f.path,
                if f.edit { " (edited)" } else { "" },
                f.contents
            ));
            if !f.contents.ends_with('\n') {
                out.push('\n');
            }
            continue;
        }
        if path.exists() && !f.edit && !opts.force {
            kept.push(f.path.clone());
            continue;
        }
        std::fs::write(&path, &f.contents)
            .with_context(|| format!("writing {}", path.display()))?;
        written.push(f.path.clone());
    }
    if opts.dry_run {
        print!("{out}");
    }
    let targets: usize = plan.created.iter().map(|(_, t)| t.len()).sum();
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    println!(
        "vbuild migrate: {} workspace{}, {} with {} ({} writing outputs)",
        plan.manager.name(),
        if plan.turbo { " with turbo.json" } else { "" },
        plural(plan.created.len(), "package"),
        plural(targets, "target"),
        plan.build_steps
    );
    let verb = if opts.dry_run { "would write" } else { "wrote" };
    for f in if opts.dry_run {
        plan.files.iter().map(|f| f.path.clone()).collect()
    } else {
        written.clone()
    } {
        let edited = plan.files.iter().any(|p| p.path == f && p.edit);
        println!(
            "  {verb} {f}{}",
            if edited {
                " (added vite-plugin-vbuild)"
            } else {
                ""
            }
        );
    }
    for (pkg, targets) in &plan.created {
        println!("  targets {pkg}: {}", targets.join(", "));
    }
    for f in &kept {
        println!("  kept {f}: it exists (--force overwrites it)");
    }
    if !plan.skipped.is_empty() {
        println!("skipped:");
        for s in &plan.skipped {
            println!("  - {s}");
        }
    }
    if !plan.undecided.is_empty() {
        println!("could not decide (check these by hand):");
        for s in &plan.undecided {
            println!("  - {s}");
        }
    }
    if !opts.dry_run && kept.is_empty() {
        println!("next: vbuild run build (or //... for every target)");
    }
    if !kept.is_empty() && !opts.dry_run {
        bail!(
            "{} file(s) exist and were kept; rerun with --force to overwrite them",
            kept.len()
        );
    }
    Ok(0)
}
