//! Translating .gitignore files into exclusions: the root's into
//! `[workspace] exclude` (written once), a package's own into `!` srcs
//! patterns of its targets.
use std::path::Path;

/// The globs one .gitignore line stands for, relative to the directory of
/// the .gitignore, or None when the line is not translated. A line without
/// a slash matches at any depth; `name` (no trailing slash) is a file or a
/// directory, so both `**/name` and everything under it are excluded.
fn line_globs(line: &str) -> Option<Vec<String>> {
    let dir_only = line.ends_with('/');
    let body = line.trim_end_matches('/');
    if body.is_empty() || body == "node_modules" || body == "**/node_modules" {
        return None; // never sources anyway
    }
    if body.starts_with('.') && !body.contains(['*', '/']) {
        return None; // hidden files and directories are never sources
    }
    if body.trim_start_matches('/').starts_with('.') && body.contains('/') {
        return None; // inside a hidden directory (`.vscode/*`): never sources
    }
    let anchored = body.starts_with('/') || body.trim_start_matches('/').contains('/');
    let body = body.trim_start_matches('/');
    let p = if anchored || body.starts_with("**/") {
        body.to_string()
    } else {
        format!("**/{body}")
    };
    // `*.log` is meant for files; `coverage` may be a file or a
    // directory, and git then ignores everything in it.
    let last = p.rsplit('/').next().unwrap_or(&p);
    Some(if dir_only || p.ends_with("/**") {
        vec![if p.ends_with("/**") {
            p
        } else {
            format!("{p}/**")
        }]
    } else if last.contains('*') {
        vec![p]
    } else {
        vec![p.clone(), format!("{p}/**")]
    })
}

fn lines(root: &Path, dir: &str, undecided: &mut Vec<String>) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(root.join(dir).join(".gitignore")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(body) = line.strip_prefix('!') {
            let body = body.trim_start_matches('/').trim_end_matches('/');
            if body.starts_with('.') || body.starts_with("node_modules") {
                continue; // hidden and node_modules paths are never sources anyway
            }
            // Globs cannot re-include: drop every earlier line that could
            // exclude what this one brings back (more inputs, never fewer).
            let sample = body.rsplit('/').next().unwrap_or(body).replace('*', "x");
            let before = out.len();
            out.retain(|l: &String| {
                let last = l.trim_end_matches('/').rsplit('/').next().unwrap_or(l);
                !crate::globs::glob(last).is_ok_and(|g| g.compile_matcher().is_match(&sample))
            });
            if out.len() == before {
                continue; // it re-includes nothing an earlier line excluded
            }
            undecided.push(format!(
                "{}/.gitignore: `{line}` re-includes files an earlier pattern excludes; that pattern is not translated (globs cannot re-include)",
                if dir.is_empty() { "." } else { dir }
            ));
            continue;
        }
        out.push(line.to_string());
    }
    out
}

/// Top-level directory names of `pkg` that the .gitignore files from the
/// root down to the package ignore (`dist`, `dist/`, `/dist` in the package's own).
pub fn ignored_dirs(root: &Path, pkg: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![String::new()];
    let mut acc = String::new();
    for seg in pkg.split('/').filter(|s| !s.is_empty()) {
        acc = if acc.is_empty() {
            seg.to_string()
        } else {
            format!("{acc}/{seg}")
        };
        dirs.push(acc.clone());
    }
    for d in dirs {
        for line in lines(root, &d, &mut Vec::new()) {
            let body = line.trim_end_matches('/');
            let own = d == pkg && body.starts_with('/');
            let body = body.trim_start_matches('/');
            if !body.contains('/') && !body.contains('*') && (own || !line.starts_with('/')) {
                out.push(body.to_string());
            }
        }
    }
    out
}

/// The root .gitignore as `[workspace] exclude` globs (root-relative).
pub fn root_excludes(root: &Path, undecided: &mut Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    for line in lines(root, "", undecided) {
        for g in line_globs(&line).into_iter().flatten() {
            if !out.contains(&g) {
                out.push(g);
            }
        }
    }
    out
}

/// `!` srcs patterns (package-relative) from the .gitignore files between
/// the root (exclusive) and the package (inclusive).
pub fn package_excludes(root: &Path, pkg: &str, undecided: &mut Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    if pkg.is_empty() {
        return out;
    }
    let mut acc = String::new();
    for seg in pkg.split('/') {
        acc = if acc.is_empty() {
            seg.to_string()
        } else {
            format!("{acc}/{seg}")
        };
        // The part of `pkg` below this .gitignore's directory.
        let below = pkg[acc.len()..].trim_start_matches('/');
        for line in lines(root, &acc, undecided) {
            for g in line_globs(&line).into_iter().flatten() {
                let g = if g.starts_with("**/") || below.is_empty() {
                    g
                } else if let Some(rest) = g.strip_prefix(&format!("{below}/")) {
                    rest.to_string()
                } else {
                    continue;
                };
                let g = format!("!{g}");
                if !out.contains(&g) {
                    out.push(g);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negations_drop_what_they_re_include() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join(".gitignore"),
            "dist/\n*.js\n*.d.ts\n!*.config.js\n!.vscode/x\n",
        )
        .unwrap();
        let mut undecided = vec![];
        assert_eq!(
            root_excludes(d.path(), &mut undecided),
            ["**/dist/**", "**/*.d.ts"]
        );
        assert_eq!(undecided.len(), 1, "{undecided:?}");
    }

    #[test]
    fn directory_lines_exclude_their_contents() {
        assert_eq!(
            line_globs("coverage").unwrap(),
            ["**/coverage", "**/coverage/**"]
        );
        assert_eq!(line_globs("dist/").unwrap(), ["**/dist/**"]);
        assert_eq!(line_globs("/tmp").unwrap(), ["tmp", "tmp/**"]);
        assert_eq!(line_globs("*.log").unwrap(), ["**/*.log"]);
        assert_eq!(
            line_globs("packages/*/lib").unwrap(),
            ["packages/*/lib", "packages/*/lib/**"]
        );
        assert!(line_globs("node_modules/").is_none());
        assert!(line_globs(".env").is_none());
    }
}
