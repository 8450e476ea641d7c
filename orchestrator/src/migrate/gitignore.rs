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
            let body = body.trim_start_matches('/');
            if body.starts_with('.') || body.starts_with("node_modules") {
                continue; // hidden and node_modules paths are never sources anyway
            }
            undecided.push(format!(
                "{}/.gitignore: negated pattern `{line}` not translated; files it re-includes stay out of srcs",
                if dir.is_empty() { "." } else { dir }
            ));
            continue;
        }
        out.push(line.to_string());
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
