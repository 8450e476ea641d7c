//! Files outside a package that its tools read: tsconfig `extends` and
//! `references`, `-c ../../x` / `--config ../../x` arguments, root tool
//! configs (`.eslintrc*`, `.oxlintrc.json`, `vitest.config.*`, ...), and
//! relative paths such as `require('../package.json')` in the package's
//! config files and scripts. Each becomes a workspace input (a root file)
//! or a dependency on the file group of the package holding it; what
//! cannot be resolved is reported.
use super::manifest::strip_jsonc;
use super::outs::normalize;
use super::scripts::{segments, tool_words};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

/// What one target reads outside its package.
#[derive(Default, Debug)]
pub struct External {
    /// Root-relative files every action should see (`[workspace] inputs`).
    pub ws_inputs: BTreeSet<String>,
    /// Packages (indexes) whose file group the target needs.
    pub groups: BTreeSet<usize>,
    pub unresolved: Vec<String>,
    /// The command or a script it runs reads `npm_package_*` /
    /// `npm_lifecycle_*`, which the package manager sets and vbuild does not.
    pub npm_env: bool,
}

/// The workspace as this module needs it.
pub struct Ctx<'a> {
    pub root: &'a Path,
    /// Package directories ("" is the root).
    pub packages: &'a [String],
    /// Package names, by index.
    pub names: &'a [Option<String>],
}

impl Ctx<'_> {
    /// The package (not the root) holding a root-relative path.
    fn owner(&self, rel: &str) -> Option<usize> {
        self.packages
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                !p.is_empty() && (rel == p.as_str() || rel.starts_with(&format!("{p}/")))
            })
            .max_by_key(|(_, p)| p.len())
            .map(|(i, _)| i)
    }

    /// Records a root-relative file read by a target of package `me`.
    fn add(&self, me: usize, rel: &str, what: &str, ext: &mut External) {
        let rel = normalize(rel);
        if rel.starts_with("..") {
            ext.unresolved
                .push(format!("{what}: `{rel}` is outside the workspace"));
            return;
        }
        if rel.split('/').any(|s| s == "node_modules") {
            return; // installed: node_modules is seen by every action
        }
        match self.owner(&rel) {
            Some(q) if q == me => {}
            Some(q) => {
                ext.groups.insert(q);
            }
            None => {
                ext.ws_inputs.insert(rel);
            }
        }
    }

    fn by_name(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n.as_deref() == Some(name))
    }
}

/// Root tool configs a command's tools look for by walking up.
fn root_configs(tool: &str) -> &'static [&'static str] {
    match tool {
        "eslint" => &[
            ".eslintrc",
            ".eslintrc.js",
            ".eslintrc.cjs",
            ".eslintrc.json",
            ".eslintrc.yml",
            ".eslintrc.yaml",
            ".eslintignore",
            "eslint.config.js",
            "eslint.config.mjs",
            "eslint.config.cjs",
            "eslint.config.ts",
            "eslint.config.mts",
        ],
        "oxlint" => &[".oxlintrc.json", "oxlintrc.json"],
        "biome" => &["biome.json", "biome.jsonc"],
        "vitest" | "jest" => &[
            "vitest.config.ts",
            "vitest.config.mts",
            "vitest.config.js",
            "vitest.config.mjs",
            "vitest.workspace.ts",
            "vitest.workspace.js",
            "vitest.workspace.json",
            "vitest.shared.ts",
            "jest.config.js",
            "jest.config.ts",
            "jest.preset.js",
            "babel.config.js",
            "babel.config.json",
            ".babelrc",
        ],
        "prettier" => &[
            ".prettierrc",
            ".prettierrc.json",
            ".prettierrc.js",
            "prettier.config.js",
            ".prettierignore",
        ],
        "babel" => &["babel.config.js", "babel.config.json", ".babelrc"],
        "stylelint" => &[".stylelintrc", ".stylelintrc.json", "stylelint.config.js"],
        _ => &[],
    }
}

/// Everything a target of package `me` running `command` reads outside it.
pub fn find(ctx: &Ctx, me: usize, command: &str) -> External {
    let mut ext = External::default();
    let pkg = ctx.packages[me].as_str();
    let dir = ctx.root.join(pkg);
    let join = |rel: &str| normalize(&format!("{pkg}/{rel}"));
    // tsconfigs at the package's top level (tsc, Vite, vitest, ESLint's
    // TypeScript parser all read them), and those named by -p/--project.
    let mut configs: Vec<String> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            (n.starts_with("tsconfig") && n.ends_with(".json")).then(|| join(&n))
        })
        .collect();
    configs.sort();
    let mut scanned = BTreeSet::new();
    ext.npm_env = command.contains("npm_package_") || command.contains("npm_lifecycle_");
    for seg in segments(command) {
        let w = tool_words(seg);
        let Some(tool) = w.first().cloned() else {
            continue;
        };
        for (i, a) in w.iter().enumerate() {
            let val = match a.split_once('=') {
                Some(("--config" | "--project" | "--tsconfig", v)) => Some(v.to_string()),
                _ if matches!(
                    a.as_str(),
                    "-c" | "--config"
                        | "-p"
                        | "--project"
                        | "--tsconfig"
                        | "--ignore-path"
                        | "--resolve-plugins-relative-to"
                ) =>
                {
                    w.get(i + 1).cloned()
                }
                _ => None,
            };
            if let Some(v) = val.filter(|v| !v.starts_with('-')) {
                let rel = join(&v);
                if rel.ends_with(".json")
                    && Path::new(&v)
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("tsconfig"))
                {
                    configs.push(rel.clone());
                }
                if !ctx.root.join(&rel).exists() {
                    ext.unresolved
                        .push(format!("`{tool} {a} {v}`: {rel} does not exist"));
                } else {
                    ctx.add(me, &rel, &format!("`{tool}` config"), &mut ext);
                    scan_relative(ctx, me, &rel, &mut ext, &mut scanned);
                }
            }
        }
        let tool_name = tool.rsplit('/').next().unwrap_or(&tool).to_string();
        for f in root_configs(&tool_name) {
            if ctx.root.join(f).is_file() {
                ext.ws_inputs.insert(f.to_string());
                scan_relative(ctx, me, f, &mut ext, &mut scanned);
            }
        }
        // Scripts it runs: `node scripts/x.mjs`, `tsx build.ts`.
        if matches!(
            tool_name.as_str(),
            "node" | "tsx" | "ts-node" | "bun" | "vite-node" | "jiti" | "zx"
        ) {
            if let Some(file) = w[1..].iter().find(|a| !a.starts_with('-')) {
                let rel = join(file);
                if ctx.root.join(&rel).is_file() {
                    ctx.add(me, &rel, "script", &mut ext);
                    scan_relative(ctx, me, &rel, &mut ext, &mut scanned);
                    let text = std::fs::read_to_string(ctx.root.join(&rel)).unwrap_or_default();
                    ext.npm_env |= text.contains("npm_package_") || text.contains("npm_lifecycle_");
                }
            }
        }
    }
    for c in configs {
        tsconfig_chain(ctx, me, &c, &mut ext, 0);
    }
    // The package's own config files may reach outside it.
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let is_cfg =
            n.contains(".config.") || n.starts_with(".eslintrc") || n.starts_with("vitest.");
        let is_code = [".js", ".mjs", ".cjs", ".ts", ".mts", ".cts"]
            .iter()
            .any(|x| n.ends_with(x));
        if is_cfg && is_code {
            scan_relative(ctx, me, &join(&n), &mut ext, &mut scanned);
        }
    }
    ext.unresolved.sort();
    ext.unresolved.dedup();
    ext
}

/// A tsconfig's `extends` (string or list; relative, or a package name) and
/// `references`, followed to other files.
fn tsconfig_chain(ctx: &Ctx, me: usize, rel: &str, ext: &mut External, depth: usize) {
    if depth > 8 {
        return;
    }
    let Some(v) = std::fs::read_to_string(ctx.root.join(rel))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&strip_jsonc(&t)).ok())
    else {
        return;
    };
    let here = Path::new(rel)
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let extends: Vec<String> = match v.get("extends") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect(),
        _ => vec![],
    };
    for e in extends {
        let target = if e.starts_with('.') {
            let mut t = normalize(&format!("{here}/{e}"));
            if !t.ends_with(".json") && !ctx.root.join(&t).is_file() {
                t.push_str(".json");
            }
            t
        } else {
            // `@acme/tsconfig/base.json`, `@acme/tsconfig` (its tsconfig.json
            // or package.json "tsconfig"), `@tsconfig/node20/tsconfig.json`.
            let parts: Vec<&str> = e.split('/').collect();
            let n = if e.starts_with('@') { 2 } else { 1 };
            let name = parts[..n.min(parts.len())].join("/");
            let sub = parts.get(n..).map(|s| s.join("/")).unwrap_or_default();
            let Some(q) = ctx.by_name(&name) else {
                continue; // installed in node_modules
            };
            let base = &ctx.packages[q];
            let sub = if sub.is_empty() {
                "tsconfig.json".to_string()
            } else {
                sub
            };
            let mut t = normalize(&format!("{base}/{sub}"));
            if !ctx.root.join(&t).is_file() && ctx.root.join(format!("{t}.json")).is_file() {
                t.push_str(".json");
            }
            t
        };
        if !ctx.root.join(&target).is_file() {
            ext.unresolved
                .push(format!("{rel}: extends `{e}`, which could not be found"));
            continue;
        }
        ctx.add(me, &target, rel, ext);
        tsconfig_chain(ctx, me, &target, ext, depth + 1);
    }
    for r in v
        .get("references")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(p) = r.get("path").and_then(Value::as_str) else {
            continue;
        };
        let mut t = normalize(&format!("{here}/{p}"));
        if ctx.root.join(&t).is_dir() {
            t = format!("{t}/tsconfig.json");
        }
        if !ctx.root.join(&t).is_file() {
            ext.unresolved
                .push(format!("{rel}: reference `{p}` could not be found"));
            continue;
        }
        ctx.add(me, &t, rel, ext);
        tsconfig_chain(ctx, me, &t, ext, depth + 1);
    }
}

/// Relative string literals leaving the file's package (`'../package.json'`,
/// `"../../eslint/base.js"`) in a JS/TS file.
fn scan_relative(ctx: &Ctx, me: usize, rel: &str, ext: &mut External, seen: &mut BTreeSet<String>) {
    if !seen.insert(rel.to_string()) || seen.len() > 64 {
        return;
    }
    let Ok(text) = std::fs::read_to_string(ctx.root.join(rel)) else {
        return;
    };
    if text.len() > 256 * 1024 {
        return;
    }
    let here = Path::new(rel)
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let pkg = &ctx.packages[me];
    for q in ['\'', '"', '`'] {
        for piece in text.split(q).skip(1).step_by(2) {
            if !piece.starts_with("../") || piece.contains(['\n', '$', '*']) || piece.len() > 200 {
                continue;
            }
            let target = normalize(&format!("{here}/{piece}"));
            let inside = pkg.is_empty() && ctx.owner(&target).is_none()
                || !pkg.is_empty() && (target == *pkg || target.starts_with(&format!("{pkg}/")));
            if inside {
                continue;
            }
            let found = [
                "",
                ".js",
                ".mjs",
                ".cjs",
                ".ts",
                ".mts",
                ".json",
                "/index.js",
                "/index.ts",
            ]
            .iter()
            .map(|x| format!("{target}{x}"))
            .find(|t| ctx.root.join(t).is_file());
            match found {
                Some(t) => {
                    ctx.add(me, &t, rel, ext);
                    if [".js", ".mjs", ".cjs", ".ts", ".mts", ".cts"]
                        .iter()
                        .any(|x| t.ends_with(x))
                    {
                        scan_relative(ctx, me, &t, ext, seen);
                    }
                }
                None if ctx.root.join(&target).is_dir() => {
                    ctx.add(me, &format!("{target}/"), rel, ext);
                }
                None => ext
                    .unresolved
                    .push(format!("{rel}: `{piece}` could not be resolved")),
            }
        }
    }
}
