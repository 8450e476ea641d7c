//! Writing (or, with `--dry-run`, printing) a plan, and the summary.
use super::{plan, Options};
use anyhow::{bail, Context, Result};
use std::path::Path;

/// Where migrate puts vbuild's JSON Schemas, relative to the root: a
/// hidden directory, so never a package and never matched by `**`.
pub const SCHEMA_DIR: &str = ".vbuild/schema";

/// The `#:schema` directive (Taplo, Even Better TOML) for a generated
/// manifest at `path` (workspace-relative): a path relative to the file, so
/// it works in any checkout and on any machine. None for other files.
fn schema_directive(path: &str) -> Option<String> {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    let schema = match name {
        "vbuild.toml" if dir.is_empty() => "vbuild.schema.json",
        "BUILD.toml" => "build.schema.json",
        _ => return None,
    };
    let up = if dir.is_empty() {
        "./".to_string()
    } else {
        "../".repeat(dir.split('/').count())
    };
    Some(format!("#:schema {up}{SCHEMA_DIR}/{schema}\n"))
}

/// `vbuild migrate`: plan, then write (or print, with `--dry-run`), then
/// summarize. Returns the exit code.
pub fn run(root: &Path, opts: &Options) -> Result<u8> {
    let mut plan = plan(root).with_context(|| format!("migrating {}", root.display()))?;
    for f in plan.files.iter_mut().filter(|f| !f.edit) {
        if let Some(line) = schema_directive(&f.path) {
            f.contents.insert_str(0, &line);
        }
    }
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
    } else {
        // vbuild's own files, always current: the `#:schema` lines above
        // point here. Written even when manifests were kept, so editors
        // validate the kept ones too.
        let dir = root.join(SCHEMA_DIR);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, text) in crate::store_cmd::SCHEMAS {
            crate::report::write_atomic(&dir.join(name), text.as_bytes())?;
        }
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
    println!("  {verb} {SCHEMA_DIR}/: JSON Schemas for editors (each manifest's `#:schema` line)");
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

#[cfg(test)]
mod tests {
    use super::schema_directive;

    #[test]
    fn directives_are_relative_to_the_manifest() {
        let d = |p| schema_directive(p).unwrap_or_default();
        assert_eq!(
            d("vbuild.toml"),
            "#:schema ./.vbuild/schema/vbuild.schema.json\n"
        );
        assert_eq!(
            d("BUILD.toml"),
            "#:schema ./.vbuild/schema/build.schema.json\n"
        );
        assert_eq!(
            d("packages/ui/BUILD.toml"),
            "#:schema ../../.vbuild/schema/build.schema.json\n"
        );
        assert_eq!(
            d("apps/web/app/BUILD.toml"),
            "#:schema ../../../.vbuild/schema/build.schema.json\n"
        );
        assert_eq!(d("packages/x/vite.config.ts"), "");
        assert_eq!(d("packages/x/vbuild.toml"), "");
    }
}
