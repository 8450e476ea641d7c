//! The overlap rule: no two targets may declare outputs that can name the
//! same path (or a path and its parent), since each restore of one would
//! delete or overwrite the other's files. Checked at load time, so it is an
//! error with both targets' file:line rather than a race at run time.
//!
//! A glob never reaches into a sub-package (the materializer confines it to
//! its package), and a literal output inside a sub-package is an error of
//! its own, so only targets of one package can overlap; a literal output of
//! a package that lands in a sub-package is reported together with the
//! sub-package's target it overlaps, if any.
use crate::globs::{is_glob, OutSpec};
use crate::workspace::join_package;
use std::ops::Range;
use std::path::Path;
use vbuild_schema::{Diagnostic, Label};

/// One target's declared outputs with where each was written.
pub struct Declared<'a> {
    pub label: &'a Label,
    pub file: &'a Path,
    pub source: &'a str,
    /// Each output with the span of its `outs` entry.
    pub outs: Vec<(OutSpec, Range<usize>)>,
}

/// Every overlap (and literal output inside a sub-package), one diagnostic
/// each, anchored at the later target's entry.
pub fn check(targets: &[Declared], packages: &[String]) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    // Targets by package, in order: a lookup, not a scan of every target
    // per output (O(N²) at load time, on every run).
    let mut of_package: std::collections::HashMap<&str, Vec<usize>> = Default::default();
    for (i, t) in targets.iter().enumerate() {
        of_package
            .entry(t.label.package.as_str())
            .or_default()
            .push(i);
    }
    for (i, b) in targets.iter().enumerate() {
        for (spec, span) in &b.outs {
            if let Some(sub) = literal_subpackage(&b.label.package, spec, packages) {
                let other = of_package.get(sub).into_iter().flatten().find_map(|&a| {
                    let a = &targets[a];
                    (a.label.package == sub)
                        .then(|| {
                            let inner = strip_package(
                                &join_package(&b.label.package, &literal(spec)?),
                                sub,
                            )?;
                            let as_sub = match spec {
                                OutSpec::Dir(_) => OutSpec::Dir(inner),
                                _ => OutSpec::File(inner),
                            };
                            a.outs
                                .iter()
                                .find(|(o, _)| may_overlap(&as_sub, o))
                                .map(|(o, s)| (a, o, s))
                        })
                        .flatten()
                });
                diags.push(match other {
                    Some((a, o, s)) => overlap_diag(b, spec, span, a, o, s),
                    None => Diagnostic::at(
                        b.file,
                        b.source,
                        Some(span.clone()),
                        format!(
                            "{}: outs entry {:?} lies inside package //{sub}",
                            b.label,
                            spec.text()
                        ),
                    )
                    .with_help(format!(
                        "a package's outputs never reach into a sub-package; declare it in {}",
                        Path::new(sub).join("BUILD.toml").display()
                    )),
                });
                continue;
            }
            // The first earlier target of the same package it overlaps.
            let earlier = of_package[b.label.package.as_str()]
                .iter()
                .take_while(|&&a| a < i)
                .map(|&a| &targets[a])
                .find_map(|a| {
                    a.outs
                        .iter()
                        .find(|(o, _)| may_overlap(spec, o))
                        .map(|(o, s)| (a, o, s))
                });
            if let Some((a, o, s)) = earlier {
                // Point at whichever entry comes later in the file.
                diags.push(if s.start > span.start {
                    overlap_diag(a, o, s, b, spec, span)
                } else {
                    overlap_diag(b, spec, span, a, o, s)
                });
            }
        }
    }
    diags
}

fn overlap_diag(
    b: &Declared,
    spec: &OutSpec,
    span: &Range<usize>,
    a: &Declared,
    other: &OutSpec,
    other_span: &Range<usize>,
) -> Diagnostic {
    let at = Diagnostic::at(a.file, a.source, Some(other_span.clone()), "");
    Diagnostic::at(
        b.file,
        b.source,
        Some(span.clone()),
        format!(
            "{}: outs entry {:?} overlaps {:?} of {} ({}:{}:{})",
            b.label,
            spec.text(),
            other.text(),
            a.label,
            at.file.display(),
            at.line,
            at.column
        ),
    )
    .with_help(
        "two targets may not declare the same files (each restore would delete the other's): \
         give each its own directory or narrower globs (e.g. \"dist/types/\" and \"dist/theme/\", \
         or \"dist/**/*.js\" and \"dist/**/*.d.ts\"), or make them one target",
    )
}

fn literal(spec: &OutSpec) -> Option<String> {
    match spec {
        OutSpec::Dir(p) | OutSpec::File(p) => Some(p.clone()),
        OutSpec::Glob(_) => None,
    }
}

fn strip_package(path: &str, package: &str) -> Option<String> {
    path.strip_prefix(package)?
        .strip_prefix('/')
        .map(str::to_string)
}

/// The sub-package of `package` a literal output lies in, if any.
fn literal_subpackage<'p>(
    package: &str,
    spec: &OutSpec,
    packages: &'p [String],
) -> Option<&'p str> {
    let path = join_package(package, &literal(spec)?);
    // `packages` is sorted: look up each directory from `path` itself up
    // to (not including) `package`, outermost first.
    let mut dirs: Vec<&str> = std::iter::successors(Some(path.as_str()), |d| {
        d.rsplit_once('/').map(|(parent, _)| parent)
    })
    .take_while(|d| d.len() > package.len())
    .collect();
    dirs.reverse();
    dirs.into_iter().find_map(|d| {
        let i = packages.binary_search_by(|p| p.as_str().cmp(d)).ok()?;
        Some(packages[i].as_str())
    })
}

/// Whether two outputs of one package (package-relative) can name the same
/// path, or one a path inside the other's. Conservative for globs: only
/// what provably cannot meet is accepted.
pub fn may_overlap(a: &OutSpec, b: &OutSpec) -> bool {
    let comps = |s: &OutSpec| -> Vec<String> {
        match s {
            OutSpec::Dir(p) | OutSpec::File(p) | OutSpec::Glob(p) => {
                p.split('/').map(str::to_string).collect()
            }
        }
    };
    // A brace alternative may hold a '/': no per-component reasoning.
    let braced_slash = |s: &OutSpec| matches!(s, OutSpec::Glob(g) if brace_holds_slash(g));
    if braced_slash(a) || braced_slash(b) {
        return true;
    }
    let (ca, cb) = (comps(a), comps(b));
    for (x, y) in ca.iter().zip(&cb) {
        if x == "**" || y == "**" {
            // Anything below may follow: only the file names can differ.
            return match (a, b) {
                (OutSpec::Dir(_), _) | (_, OutSpec::Dir(_)) => true,
                _ => components_meet(ca.last().unwrap(), cb.last().unwrap()),
            };
        }
        if !components_meet(x, y) {
            return false;
        }
    }
    // One is a prefix of the other (component-wise): the same path, or one
    // a directory of the other's path. A longer glob below a file is still
    // a file/directory conflict, so every case overlaps.
    true
}

/// Whether two path components (literal or glob) can name the same name.
fn components_meet(x: &str, y: &str) -> bool {
    match (is_glob(x), is_glob(y)) {
        (false, false) => x == y,
        (true, false) => crate::globs::out_glob(x).is_ok_and(|g| g.is_match(y)),
        (false, true) => crate::globs::out_glob(y).is_ok_and(|g| g.is_match(x)),
        (true, true) => {
            if x == "**" || y == "**" {
                return true;
            }
            // Literal head and tail must agree ("*.js" vs "*.d.ts" cannot).
            let (hx, tx) = literal_ends(x);
            let (hy, ty) = literal_ends(y);
            (hx.starts_with(hy) || hy.starts_with(hx)) && (tx.ends_with(ty) || ty.ends_with(tx))
        }
    }
}

/// The literal text before the first and after the last glob character.
fn literal_ends(c: &str) -> (&str, &str) {
    let meta = |ch: char| matches!(ch, '*' | '?' | '[' | ']' | '{' | '}');
    let head = c.find(meta).map_or(c, |i| &c[..i]);
    let tail = c.rfind(meta).map_or(c, |i| &c[i + 1..]);
    (head, tail)
}

fn brace_holds_slash(g: &str) -> bool {
    let mut depth = 0;
    for ch in g.chars() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            '/' if depth > 0 => return true,
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(s: &str) -> OutSpec {
        OutSpec::parse(s).unwrap()
    }

    #[test]
    fn overlapping_and_disjoint_outputs() {
        for (a, b) in [
            ("dist/", "dist/"),
            ("dist/", "dist/types/"),
            ("dist/", "dist/a.js"),
            ("out", "out/x.txt"),
            ("*.js", "a.js"),
            ("dist/**/*.js", "dist/x/"),
            ("**/*.js", "lib/a.js"),
            ("dist/*.js", "dist/*"),
            ("*.js", "*.js"),
            ("{a,b/c}.js", "x"),
        ] {
            assert!(may_overlap(&o(a), &o(b)), "{a} vs {b}");
            assert!(may_overlap(&o(b), &o(a)), "{b} vs {a}");
        }
        for (a, b) in [
            ("dist/", "build/"),
            ("dist/types/", "dist/theme/"),
            ("dist/a.js", "dist/b.js"),
            ("*.js", "*.d.ts"),
            ("dist/**/*.js", "dist/**/*.d.ts"),
            ("*.js", "lib/"),
            ("*.js", "lib/a.js"),
            ("a*.js", "b*.js"),
        ] {
            assert!(!may_overlap(&o(a), &o(b)), "{a} vs {b}");
            assert!(!may_overlap(&o(b), &o(a)), "{b} vs {a}");
        }
    }
}

#[cfg(test)]
mod subpackage_tests {
    use super::*;

    #[test]
    fn literal_outputs_find_the_outermost_sub_package() {
        let packages: Vec<String> = ["", "a", "a/b", "a/b/c", "ab"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let file = |p: &str| OutSpec::File(p.into());
        assert_eq!(
            literal_subpackage("a", &file("b/c/x"), &packages),
            Some("a/b")
        );
        assert_eq!(literal_subpackage("a", &file("x/y"), &packages), None);
        assert_eq!(
            literal_subpackage("", &file("ab/out"), &packages),
            Some("ab")
        );
        assert_eq!(literal_subpackage("", &file("a"), &packages), Some("a"));
        assert_eq!(
            literal_subpackage("a/b", &OutSpec::Dir("c".into()), &packages),
            Some("a/b/c")
        );
        assert_eq!(
            literal_subpackage("a", &OutSpec::Glob("b/*".into()), &packages),
            None
        );
    }
}
