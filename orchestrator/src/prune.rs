//! Which directories the load walk need not list: those where
//! `[workspace] exclude` provably matches every path below, so no file in
//! them can ever be a source (`**/dist/**` covers every `dist/`). Not
//! listing them saves an open, two directory reads and a close per package
//! on a no-op, and their files in the sorted file list.
//!
//! The proof, per exclusion: a glob `X/**` (a trailing `/**`, also what a
//! written `dir/` becomes) matches `D/anything` whenever `X` alone matches
//! `D`, since globset compiles the trailing `/**` to `/.*` after `X`'s own
//! expression. Nothing re-includes what an exclusion matches (srcs
//! exclusions always win, `SrcMatcher::matches`, and `resolve_srcs` checks
//! the exclusions again), so a pruned directory holds no source under the
//! current rules. Exclusions of other shapes (`**/*.tsbuildinfo`) prune
//! nothing: files are still filtered one by one as before.
//!
//! `[workspace] inputs` are not filtered by the exclusions, so a directory
//! an input pattern could reach into is never pruned.
use crate::globs::{glob, is_glob, normalize};
use globset::{GlobSet, GlobSetBuilder};

#[derive(Debug, Default)]
pub struct Prune {
    /// `X` of every exclusion `X/**`; `None` when no exclusion has that shape.
    dirs: Option<GlobSet>,
    /// The exclusions themselves, to re-check a directory with (see `covers`).
    exclude: GlobSet,
    /// Workspace inputs, as (segments, whether it is a glob).
    inputs: Vec<(Vec<String>, bool)>,
}

impl Prune {
    /// `exclude`: the normalized exclusion globs (`workspace_exclude`);
    /// `inputs`: `[workspace] inputs` as written.
    pub fn new<'a>(exclude: &[String], inputs: impl Iterator<Item = &'a str>) -> Prune {
        let mut all = GlobSetBuilder::new();
        let mut dirs = GlobSetBuilder::new();
        let mut any = false;
        for pattern in exclude {
            let Ok(g) = glob(pattern) else {
                // Invalid: a load error already; prune nothing.
                return Prune::default();
            };
            all.add(g);
            if let Some(prefix) = pattern.strip_suffix("/**") {
                if let Ok(g) = glob(prefix) {
                    dirs.add(g);
                    any = true;
                }
            }
        }
        let inputs = inputs
            .filter(|text| !text.starts_with('!'))
            .filter_map(|text| {
                let (path, is_dir) = normalize(text).ok()?;
                let glob = is_dir || is_glob(&path);
                Some((path.split('/').map(str::to_string).collect(), glob))
            })
            .collect();
        Prune {
            dirs: any.then(|| dirs.build().ok()).flatten(),
            exclude: all.build().unwrap_or_else(|_| GlobSet::empty()),
            inputs,
        }
    }

    /// Whether the walk may skip `dir` (workspace-relative) and all below it.
    pub fn covers(&self, dir: &str) -> bool {
        let Some(dirs) = &self.dirs else {
            return false;
        };
        if !dirs.is_match(dir) {
            return false;
        }
        // Belt and braces: the exclusions as matched on files must match a
        // file in it (always true by the argument above).
        if !self.exclude.is_match(format!("{dir}/x")) {
            return false;
        }
        !self
            .inputs
            .iter()
            .any(|(segs, glob)| reaches(dir, segs, *glob))
    }
}

/// Whether an input pattern could match a file below `dir`: its literal
/// leading segments agree with `dir`'s as far as both go (a literal path:
/// `dir` is one of its parent directories).
fn reaches(dir: &str, segs: &[String], glob: bool) -> bool {
    let literal = segs.iter().take_while(|s| !is_glob(s)).count();
    let d: Vec<&str> = dir.split('/').collect();
    if !glob {
        return d.len() < segs.len() && d.iter().zip(segs).all(|(a, b)| a == b);
    }
    d.iter().zip(&segs[..literal]).all(|(a, b)| a == b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prune(exclude: &[&str], inputs: &[&str]) -> Prune {
        let ex: Vec<String> = exclude.iter().map(|s| s.to_string()).collect();
        Prune::new(&ex, inputs.iter().copied())
    }

    #[test]
    fn covers_only_directories_an_exclusion_fills() {
        let p = prune(&["**/dist/**", "**/*.tsbuildinfo", "build/**"], &[]);
        assert!(p.covers("dist"));
        assert!(p.covers("packages/a/dist"));
        assert!(p.covers("build"));
        // Similar names, or only some files inside: listed as before.
        assert!(!p.covers("packages/a/dist2"));
        assert!(!p.covers("packages/a/distx"));
        assert!(!p.covers("packages/a/my-dist"));
        assert!(!p.covers("packages/build"));
        assert!(!p.covers("x.tsbuildinfo"));
        assert!(!p.covers("src"));
        // `*` stays within a segment: `a/*/**` covers `a/b`, not `a`.
        let p = prune(&["packages/*/out/**"], &[]);
        assert!(p.covers("packages/a/out"));
        assert!(!p.covers("packages/a/b/out"));
        assert!(!p.covers("packages/a"));
        assert!(!prune(&[], &[]).covers("dist"));
    }

    #[test]
    fn a_literal_bang_is_no_negation() {
        // An exclusion starting with `!` is a glob like any other (the
        // matcher has no negation there): it covers what it names.
        let p = prune(&["**/dist/**", "!**/dist/keep/**"], &[]);
        assert!(p.covers("a/dist"));
        assert!(p.covers("packages/a/dist"));
    }

    #[test]
    fn directories_inputs_reach_stay() {
        let p = prune(&["**/dist/**"], &["dist/schema.json", "tools/*/dist/**"]);
        assert!(!p.covers("dist"));
        assert!(p.covers("packages/a/dist"));
        assert!(!p.covers("tools/x/dist"));
        assert!(!p.covers("tools/x/dist/deep"));
        let p = prune(&["**/dist/**"], &["**/*.json"]);
        assert!(!p.covers("packages/a/dist"));
        let p = prune(&["**/dist/**"], &["pnpm-workspace.yaml", "!dist/**"]);
        assert!(p.covers("dist"));
    }
}
