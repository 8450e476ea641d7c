//! Nx's `outputs` for a task: the package's project.json (or package.json
//! `nx`) target, else nx.json `targetDefaults`. Only the simple forms are
//! translated (`{projectRoot}/dist`, `{workspaceRoot}/PKG/dist`, globs);
//! `{options.outputPath}` and paths outside the package are listed instead.
use super::manifest::strip_jsonc;
use serde_json::Value;
use std::path::Path;

fn json(path: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&strip_jsonc(&text)).ok()
}

fn outputs_of(targets: Option<&Value>, task: &str) -> Option<Vec<String>> {
    let list = targets?.get(task)?.get("outputs")?.as_array()?;
    Some(
        list.iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
    )
}

/// The outputs Nx declares for `task` of the package at `pkg` (relative to
/// `root`), as written; None when Nx says nothing (or there is no nx.json).
pub fn task_outputs(root: &Path, pkg: &str, task: &str) -> Option<Vec<String>> {
    let nx = json(&root.join("nx.json"))?;
    let dir = root.join(pkg);
    let project = json(&dir.join("project.json"));
    let manifest = json(&dir.join("package.json"));
    outputs_of(project.as_ref().and_then(|p| p.get("targets")), task)
        .or_else(|| {
            outputs_of(
                manifest
                    .as_ref()
                    .and_then(|m| m.get("nx"))
                    .and_then(|n| n.get("targets")),
                task,
            )
        })
        .or_else(|| outputs_of(nx.get("targetDefaults"), task))
}

/// Nx outputs as package-relative outs (`dist/`, `coverage/`, globs);
/// what cannot be translated is pushed to `undecided`.
pub fn outs(outputs: &[String], pkg: &str, undecided: &mut Vec<String>, what: &str) -> Vec<String> {
    let mut out = Vec::new();
    for o in outputs {
        let rel = if let Some(r) = o.strip_prefix("{projectRoot}") {
            Some(r.trim_start_matches('/').to_string())
        } else if let Some(r) = o.strip_prefix("{workspaceRoot}") {
            let r = r.trim_start_matches('/');
            if pkg.is_empty() {
                Some(r.to_string())
            } else {
                r.strip_prefix(&format!("{pkg}/")).map(str::to_string)
            }
        } else {
            None
        };
        let Some(rel) = rel.filter(|r| !r.is_empty() && !r.contains('{') && !r.starts_with('!'))
        else {
            undecided.push(format!(
                "{what}: nx output `{o}` not translated (only {{projectRoot}}/… and {{workspaceRoot}}/PACKAGE/… inside the package are)"
            ));
            continue;
        };
        // A path without a glob is a directory unless its name has an
        // extension (Nx does not say which).
        let file_like = crate::globs::is_glob(&rel)
            || rel.ends_with('/')
            || rel.rsplit('/').next().is_some_and(|n| n.contains('.'));
        let rel = if file_like { rel } else { format!("{rel}/") };
        // Then the same checks as turbo's (valid, not node_modules).
        out.extend(super::manifest::turbo_outs(
            std::slice::from_ref(&rel),
            undecided,
            what,
        ));
    }
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_forms_are_translated() {
        let mut u = Vec::new();
        let o = outs(
            &[
                "{projectRoot}/dist".into(),
                "{workspaceRoot}/packages/a/coverage".into(),
                "{workspaceRoot}/dist/{projectRoot}".into(),
                "{options.outputPath}".into(),
                "{projectRoot}/types/**/*.d.ts".into(),
                "{projectRoot}/stats.json".into(),
            ],
            "packages/a",
            &mut u,
            "a:build",
        );
        assert_eq!(o, ["dist/", "coverage/", "types/**/*.d.ts", "stats.json"]);
        assert_eq!(u.len(), 2, "{u:?}");
    }
}
