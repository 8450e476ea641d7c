//! Which package manager a workspace uses, and where its packages are.
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Manager {
    Pnpm,
    Yarn,
    Npm,
    Bun,
}

impl Manager {
    pub fn name(self) -> &'static str {
        match self {
            Manager::Pnpm => "pnpm",
            Manager::Yarn => "yarn",
            Manager::Npm => "npm",
            Manager::Bun => "bun",
        }
    }
}

/// The workspace as the package manager defines it.
pub struct Layout {
    pub manager: Manager,
    /// Package directories relative to the root ("" is the root), sorted.
    pub packages: Vec<String>,
}

/// `packages:` of pnpm-workspace.yaml: a YAML list of strings. Read line by
/// line (the file is always this simple in practice).
pub fn pnpm_globs(text: &str) -> Vec<String> {
    let mut globs = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.split(" #").next().unwrap_or("");
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if !line.starts_with([' ', '\t', '-']) {
            inside = line.trim_end() == "packages:";
            continue;
        }
        if let Some(item) = line.trim().strip_prefix('-').filter(|_| inside) {
            globs.push(item.trim().trim_matches(['"', '\'']).to_string());
        }
    }
    globs
}

pub fn detect(root: &Path) -> Result<Layout> {
    let pkg_json = root.join("package.json");
    let manifest: serde_json::Value = match std::fs::read(&pkg_json) {
        Ok(bytes) => serde_json::from_slice(&bytes).context("reading package.json")?,
        Err(_) => serde_json::Value::Null,
    };
    let (manager, globs) = if let Ok(text) =
        std::fs::read_to_string(root.join("pnpm-workspace.yaml"))
    {
        (Manager::Pnpm, pnpm_globs(&text))
    } else {
        let ws = manifest.get("workspaces");
        let list = ws
            .and_then(|w| w.as_array().or_else(|| w.get("packages")?.as_array()))
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect::<Vec<_>>()
            });
        let Some(list) = list else {
            bail!(
                "{} is not the root of an npm, pnpm or yarn workspace: no pnpm-workspace.yaml and no \"workspaces\" in package.json",
                root.display()
            );
        };
        let manager = if root.join("yarn.lock").exists() {
            Manager::Yarn
        } else if root.join("bun.lock").exists() || root.join("bun.lockb").exists() {
            Manager::Bun
        } else {
            Manager::Npm
        };
        (manager, list)
    };
    let packages = expand(root, &globs)?;
    Ok(Layout { manager, packages })
}

/// Directories matching the workspace globs (`!` excludes) that hold a
/// package.json, plus the root when it has one.
fn expand(root: &Path, globs: &[String]) -> Result<Vec<String>> {
    let mut include = globset::GlobSetBuilder::new();
    let mut exclude = globset::GlobSetBuilder::new();
    for g in globs {
        let (neg, body) = match g.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, g.as_str()),
        };
        let body = body.trim_start_matches("./").trim_end_matches('/');
        let glob = crate::globs::glob(body).with_context(|| format!("workspace glob {g:?}"))?;
        if neg {
            exclude.add(glob);
        } else {
            include.add(glob);
        }
    }
    let (include, exclude) = (include.build()?, exclude.build()?);
    let mut found = Vec::new();
    if root.join("package.json").is_file() {
        found.push(String::new());
    }
    for entry in crate::workspace::searched_dirs(root) {
        if entry.depth() == 0 {
            continue;
        }
        let rel: PathBuf = entry.path().strip_prefix(root)?.to_path_buf();
        let rel = rel.to_string_lossy().replace('\\', "/");
        if include.is_match(&rel)
            && !exclude.is_match(&rel)
            && entry.path().join("package.json").is_file()
        {
            found.push(rel);
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pnpm_workspace_globs() {
        let text = "packages:\n  - \"packages/*\"\n  - 'apps/*' # apps\n  - '!**/test/**'\ncatalog:\n  vite: 8.0.0\n";
        assert_eq!(pnpm_globs(text), ["packages/*", "apps/*", "!**/test/**"]);
    }
}
