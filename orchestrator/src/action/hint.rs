//! A failed action whose output names a path of the staged workspace that
//! was not staged (`ENOENT … '/vbuild/ws/tsconfig.base.json'`, a tool's
//! stack trace) gets one line saying which declaration would provide it.
use crate::globs::OutSpec;
use crate::workspace::{Target, Workspace};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use vbuild_store::EntryKind;

/// How much of the end of each log is searched: errors come last.
const TAIL: u64 = 256 * 1024;
/// Paths looked at, at most (a log may name thousands).
const MAX_PATHS: usize = 64;

fn tail(path: &Path) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(TAIL)));
    let mut bytes = Vec::new();
    let _ = f.take(TAIL).read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Workspace-relative paths the text names under `ws_inside` (the
/// workspace as the action saw it), in order of appearance, deduplicated.
fn named_paths(text: &str, ws_inside: &str) -> Vec<String> {
    let prefix = format!("{}/", ws_inside.trim_end_matches('/'));
    let mut found: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(&prefix) {
        rest = &rest[at + prefix.len()..];
        let end = rest
            .find(|c: char| c.is_whitespace() || "'\"`,;()[]<>{}".contains(c))
            .unwrap_or(rest.len());
        // `file.ts:3:14` and a sentence's full stop are not part of it.
        let mut path = rest[..end].split(':').next().unwrap_or("");
        path = path.trim_end_matches(['.', '/']);
        if !path.is_empty() && !path.split('/').any(|c| c == ".." || c == ".") {
            if !found.iter().any(|f| f == path) {
                found.push(path.to_string());
            }
            if found.len() >= MAX_PATHS {
                break;
            }
        }
        rest = &rest[end..];
    }
    found
}

/// The nearest package at or above `path`'s directory.
fn package_of<'a>(ws: &'a Workspace, path: &str) -> Option<&'a str> {
    let mut dir = path;
    loop {
        dir = dir.rfind('/').map_or("", |i| &dir[..i]);
        if let Ok(i) = ws.packages.binary_search_by(|p| p.as_str().cmp(dir)) {
            return Some(&ws.packages[i]);
        }
        if dir.is_empty() {
            return None;
        }
    }
}

/// Whether the load walk saw `path` as a file, or as a directory holding files.
fn in_workspace(ws: &Workspace, path: &str) -> bool {
    let files = &ws.tree.files;
    if files.binary_search_by(|f| f.as_str().cmp(path)).is_ok() {
        return true;
    }
    let dir = format!("{path}/");
    let at = files.partition_point(|f| f.as_str() < dir.as_str());
    files.get(at).is_some_and(|f| f.starts_with(&dir))
}

/// What would stage `path` for `target`, if anything can.
fn suggestion(ws: &Workspace, target: &Target, path: &str) -> Option<String> {
    // Another target's output: depend on it.
    for t in &ws.targets {
        let Some(rel) = (match t.label.package.as_str() {
            "" => Some(path),
            p => path.strip_prefix(p).and_then(|r| r.strip_prefix('/')),
        }) else {
            continue;
        };
        let declared = t.outs.iter().any(|o| match o {
            OutSpec::Glob(g) => o.covers(rel, crate::globs::out_glob(g).ok().as_ref()),
            OutSpec::Dir(d) => d == rel || o.covers(rel, None),
            OutSpec::File(_) => o.covers(rel, None),
        });
        if declared && t.label == target.label {
            return None;
        }
        if declared {
            return Some(format!(
                "it is an output of {}: add \"{}\" to deps",
                t.label, t.label
            ));
        }
    }
    if path.split('/').any(|c| c == "node_modules") {
        return Some(
            "it is under node_modules: set node_modules = true (vbuild.toml or the target)".into(),
        );
    }
    if !in_workspace(ws, path) {
        return None;
    }
    let shown = |pkg: &str| match pkg {
        "" => path.to_string(),
        p => path[p.len() + 1..].to_string(),
    };
    match package_of(ws, path) {
        Some(pkg) if pkg == target.label.package => Some(format!(
            "it is a file of this package: add \"{}\" to srcs",
            shown(pkg)
        )),
        Some(pkg) => {
            let rel = shown(pkg);
            let group = ws
                .targets
                .iter()
                .find(|t| t.file_group && t.label.package == pkg && t.srcs.matches(&rel));
            Some(match group {
                Some(g) => format!("add \"{}\" (a file group holding it) to deps", g.label),
                None if pkg.is_empty() => format!(
                    "add \"{path}\" to [workspace] inputs in vbuild.toml (every action sees it) or to a file group of the root package"
                ),
                None => format!(
                    "it belongs to //{pkg}: declare a file group there (srcs = [\"{rel}\"], no command) and add it to deps"
                ),
            })
        }
        None => Some(format!(
            "add \"{path}\" to [workspace] inputs in vbuild.toml"
        )),
    }
}

/// The hint for a failed action, if its logs name an unstaged path.
pub(super) fn for_failure(
    ws: &Workspace,
    target: &Target,
    inputs: &BTreeMap<String, EntryKind>,
    ws_inside: &Path,
    logs: [&Path; 2],
) -> Option<String> {
    let ws_inside = ws_inside.to_string_lossy();
    let staged = |p: &str| {
        if inputs.contains_key(p) {
            return true;
        }
        let dir = format!("{p}/");
        inputs
            .range(dir.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&dir))
    };
    let mut hints = logs
        .iter()
        .flat_map(|log| named_paths(&tail(log), &ws_inside))
        .filter(|p| !staged(p))
        .filter_map(|p| Some((suggestion(ws, target, &p)?, p)));
    let (what, path) = hints.next()?;
    let more = hints.count();
    let more = match more {
        0 => String::new(),
        n => format!(
            " (and {n} more unstaged path{})",
            if n == 1 { "" } else { "s" }
        ),
    };
    Some(format!(
        "the output names '{path}', which was not staged: {what}{more}"
    ))
}

#[cfg(test)]
mod tests {
    use super::named_paths;

    #[test]
    fn finds_paths_in_messages() {
        let text = "error TS5083: Cannot read file '/vbuild/ws/tsconfig.base.json'.\n\
                    at Object.<anonymous> (/vbuild/ws/packages/ui/src/a.ts:3:14)\n\
                    ENOENT: no such file, open /vbuild/ws/packages/ui/dist/x.js.\n\
                    again '/vbuild/ws/tsconfig.base.json' and /vbuild/ws/../etc";
        assert_eq!(
            named_paths(text, "/vbuild/ws"),
            [
                "tsconfig.base.json",
                "packages/ui/src/a.ts",
                "packages/ui/dist/x.js"
            ]
        );
    }
}
