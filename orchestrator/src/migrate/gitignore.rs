//! Translating .gitignore files into `!` srcs patterns.
use std::path::Path;

/// `!` patterns for srcs from the .gitignore files of the root and the package.
pub fn gitignore_excludes(root: &Path, pkg: &str, undecided: &mut Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![String::new()];
    if !pkg.is_empty() {
        let mut acc = String::new();
        for seg in pkg.split('/') {
            acc = if acc.is_empty() {
                seg.to_string()
            } else {
                format!("{acc}/{seg}")
            };
            dirs.push(acc.clone());
        }
    }
    for dir in dirs {
        let Ok(text) = std::fs::read_to_string(root.join(&dir).join(".gitignore")) else {
            continue;
        };
        // The part of `pkg` below this .gitignore's directory.
        let below = pkg
            .strip_prefix(dir.as_str())
            .unwrap_or(pkg)
            .trim_start_matches('/');
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.starts_with('!') {
                undecided.push(format!(
                    "{}/.gitignore: negated pattern `{line}` not translated; files it re-includes stay out of srcs",
                    if dir.is_empty() { "." } else { &dir }
                ));
                continue;
            }
            let dir_only = line.ends_with('/');
            let body = line.trim_end_matches('/');
            if body == "node_modules" || body.starts_with('.') && !body.contains(['*', '/']) {
                // node_modules and hidden directories are never srcs anyway.
                continue;
            }
            let anchored = body.starts_with('/') || body.trim_start_matches('/').contains('/');
            let body = body.trim_start_matches('/');
            let pats = if anchored {
                if below.is_empty() {
                    vec![body.to_string()]
                } else if let Some(rest) = body.strip_prefix(&format!("{below}/")) {
                    vec![rest.to_string()]
                } else {
                    continue;
                }
            } else {
                vec![format!("**/{body}")]
            };
            for p in pats {
                // `dist/` matches directories only; `*.log` is meant for files.
                let forms = if dir_only {
                    vec![format!("!{p}/**")]
                } else if p.contains('*') {
                    vec![format!("!{p}")]
                } else {
                    vec![format!("!{p}"), format!("!{p}/**")]
                };
                for pat in forms {
                    if !out.contains(&pat) {
                        out.push(pat);
                    }
                }
            }
        }
    }
    out
}
