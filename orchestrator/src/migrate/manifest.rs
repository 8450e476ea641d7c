//! Reading what a package declares: package.json, turbo.json, and the
//! output directories of Vite and tsc where they can be read statically.
use anyhow::{Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// The parts of a package.json migrate uses.
#[derive(Clone, Debug, Default)]
pub struct Manifest {
    pub name: Option<String>,
    pub version: Option<String>,
    /// In file order.
    pub scripts: Vec<(String, String)>,
    /// name → (range, is_dev).
    pub deps: BTreeMap<String, (String, bool)>,
    /// Files `main`, `module`, `types`, `typings`, `exports` point at.
    pub entries: Vec<String>,
}

fn leaves(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.trim_start_matches("./").to_string()),
        Value::Array(a) => a.iter().for_each(|v| leaves(v, out)),
        Value::Object(o) => o.values().for_each(|v| leaves(v, out)),
        _ => {}
    }
}

pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join("package.json");
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let v: Value =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let mut m = Manifest {
        name: text("name"),
        version: text("version"),
        ..Default::default()
    };
    for k in ["main", "module", "types", "typings", "exports"] {
        if let Some(e) = v.get(k) {
            leaves(e, &mut m.entries);
        }
    }
    if let Some(scripts) = v.get("scripts").and_then(Value::as_object) {
        for (k, s) in scripts {
            if let Some(s) = s.as_str() {
                m.scripts.push((k.clone(), s.to_string()));
            }
        }
    }
    for (field, dev) in [
        ("dependencies", false),
        ("optionalDependencies", false),
        ("peerDependencies", false),
        ("devDependencies", true),
    ] {
        if let Some(map) = v.get(field).and_then(Value::as_object) {
            for (name, range) in map {
                let range = range.as_str().unwrap_or("").to_string();
                // A runtime dependency wins over a dev one of the same name.
                m.deps.entry(name.clone()).or_insert((range, dev));
            }
        }
    }
    Ok(m)
}

/// Strips `//` and `/* */` comments and trailing commas (turbo.json and
/// tsconfig.json are JSONC).
pub fn strip_jsonc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_str = false;
    while let Some(c) = chars.next() {
        if in_str {
            out.push(c);
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else if c == '"' {
                in_str = false;
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_str = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut prev = ' ';
                for n in chars.by_ref() {
                    if prev == '*' && n == '/' {
                        break;
                    }
                    prev = n;
                }
            }
            _ => out.push(c),
        }
    }
    // Trailing commas before } or ].
    drop_trailing_commas(&out)
}

fn drop_trailing_commas(text: &str) -> String {
    let bytes: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut in_str = false;
    for (i, &c) in bytes.iter().enumerate() {
        if in_str {
            if c == '"' && (i == 0 || bytes[i - 1] != '\\') {
                in_str = false;
            }
            out.push(c);
            continue;
        }
        if c == '"' {
            in_str = true;
        }
        if c == ',' {
            let next = bytes[i + 1..].iter().find(|n| !n.is_whitespace());
            if matches!(next, Some('}') | Some(']')) {
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// One turbo.json task, as far as migrate translates it.
#[derive(Clone, Debug, Default)]
pub struct TurboTask {
    pub depends_on: Option<Vec<String>>,
    pub inputs: Option<Vec<String>>,
    pub outputs: Option<Vec<String>>,
    pub env: Vec<String>,
    pub pass_through_env: Vec<String>,
    pub cache: Option<bool>,
    pub persistent: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Turbo {
    /// Task name (`build`, or `pkg#build`) → settings.
    pub tasks: BTreeMap<String, TurboTask>,
    pub global_env: Vec<String>,
    pub global_pass_through_env: Vec<String>,
    pub global_dependencies: Vec<String>,
}

impl Turbo {
    /// The settings of `task` for package `name`: `name#task` first.
    pub fn task(&self, pkg_name: Option<&str>, task: &str) -> Option<&TurboTask> {
        pkg_name
            .and_then(|n| self.tasks.get(&format!("{n}#{task}")))
            .or_else(|| self.tasks.get(task))
    }

    /// Plain task names (no `pkg#`).
    pub fn task_names(&self) -> Vec<String> {
        self.tasks
            .keys()
            .map(|k| k.rsplit('#').next().unwrap_or(k).to_string())
            .collect()
    }
}

fn strings(v: Option<&Value>) -> Option<Vec<String>> {
    v.and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    })
}

pub fn read_turbo(root: &Path) -> Result<Option<Turbo>> {
    let path = root.join("turbo.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let v: Value = serde_json::from_str(&strip_jsonc(&text)).context("parsing turbo.json")?;
    let mut turbo = Turbo {
        global_env: strings(v.get("globalEnv")).unwrap_or_default(),
        global_pass_through_env: strings(v.get("globalPassThroughEnv")).unwrap_or_default(),
        global_dependencies: strings(v.get("globalDependencies")).unwrap_or_default(),
        ..Default::default()
    };
    // turbo 2 says "tasks", turbo 1 said "pipeline".
    let tasks = v
        .get("tasks")
        .or_else(|| v.get("pipeline"))
        .and_then(Value::as_object);
    for (name, t) in tasks.into_iter().flatten() {
        turbo.tasks.insert(
            name.clone(),
            TurboTask {
                depends_on: strings(t.get("dependsOn")),
                inputs: strings(t.get("inputs")),
                outputs: strings(t.get("outputs")),
                env: strings(t.get("env")).unwrap_or_default(),
                pass_through_env: strings(t.get("passThroughEnv")).unwrap_or_default(),
                cache: t.get("cache").and_then(Value::as_bool),
                persistent: t
                    .get("persistent")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            },
        );
    }
    Ok(Some(turbo))
}

/// A package's own turbo.json (`"extends": ["//"]`): its tasks override the
/// root's fields for that package, as `pkg#task` entries do.
pub fn add_package_turbo(turbo: &mut Turbo, dir: &Path, pkg_name: &str) -> Result<()> {
    let path = dir.join("turbo.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let v: Value = serde_json::from_str(&strip_jsonc(&text))
        .with_context(|| format!("parsing {}", path.display()))?;
    let tasks = v
        .get("tasks")
        .or_else(|| v.get("pipeline"))
        .and_then(Value::as_object);
    for (name, t) in tasks.into_iter().flatten() {
        let key = format!("{pkg_name}#{name}");
        let mut merged = turbo
            .task(Some(pkg_name), name)
            .cloned()
            .unwrap_or_default();
        let over = |field: &str| strings(t.get(field));
        if t.get("dependsOn").is_some() {
            merged.depends_on = over("dependsOn");
        }
        if t.get("inputs").is_some() {
            merged.inputs = over("inputs");
        }
        if t.get("outputs").is_some() {
            merged.outputs = over("outputs");
        }
        if let Some(e) = over("env") {
            merged.env = e;
        }
        if let Some(e) = over("passThroughEnv") {
            merged.pass_through_env = e;
        }
        if let Some(c) = t.get("cache").and_then(Value::as_bool) {
            merged.cache = Some(c);
        }
        if let Some(p) = t.get("persistent").and_then(Value::as_bool) {
            merged.persistent = p;
        }
        turbo.tasks.insert(key, merged);
    }
    Ok(())
}

/// The Vite config file of a package, if any.
pub fn vite_config(dir: &Path) -> Option<String> {
    ["ts", "mts", "js", "mjs", "cts", "cjs"]
        .iter()
        .map(|ext| format!("vite.config.{ext}"))
        .find(|f| dir.join(f).is_file())
}

/// `build.outDir` of a Vite config when written as a string literal;
/// `Some("dist")` when the config does not mention outDir; `None` when it
/// is computed and cannot be read.
pub fn vite_out_dir(source: &str) -> Option<String> {
    let Some(pos) = source.find("outDir") else {
        return Some("dist".into());
    };
    let rest = source[pos + "outDir".len()..].trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    let quote = rest
        .chars()
        .next()
        .filter(|c| matches!(c, '"' | '\'' | '`'))?;
    let body = &rest[1..];
    let end = body.find(quote)?;
    let value = &body[..end];
    (!value.contains("${")).then(|| {
        value
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string()
    })
}

/// turbo's `outputs` → vbuild `outs` (`dist/**` → `dist/`).
pub fn turbo_outs(outputs: &[String], undecided: &mut Vec<String>, what: &str) -> Vec<String> {
    let mut outs = Vec::new();
    for o in outputs {
        if o.starts_with('!') {
            undecided.push(format!(
                "{what}: turbo output exclusion `{o}` not translated"
            ));
            continue;
        }
        // Globs are relative to the package, as turbo reads them.
        let o = o.trim_start_matches("./");
        let dir_of =
            |d: &str| (!d.is_empty() && !crate::globs::is_glob(d)).then(|| format!("{d}/"));
        let out = o
            .strip_suffix("/**")
            .or_else(|| o.strip_suffix("/**/*"))
            .and_then(dir_of)
            // `dist**` (turbo's starter templates): the directory.
            .or_else(|| {
                o.strip_suffix("**")
                    .filter(|d| !d.ends_with('/'))
                    .and_then(dir_of)
            })
            .unwrap_or_else(|| o.to_string());
        let first = out.split('/').next().unwrap_or("");
        if first == "node_modules" || out.starts_with("$TURBO") {
            undecided.push(format!(
                "{what}: turbo output `{o}` not declared (node_modules and turbo's own paths are not outputs)"
            ));
            continue;
        }
        let valid = match crate::globs::OutSpec::parse(&out) {
            Ok(crate::globs::OutSpec::Glob(g)) => crate::globs::out_glob(&g).is_ok(),
            Ok(_) => true,
            Err(_) => false,
        };
        if !valid {
            undecided.push(format!(
                "{what}: turbo output `{o}` is not a path or glob inside the package: not declared"
            ));
            continue;
        }
        if !outs.contains(&out) {
            outs.push(out);
        }
    }
    outs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vite_out_dirs() {
        assert_eq!(vite_out_dir("export default {}").as_deref(), Some("dist"));
        assert_eq!(
            vite_out_dir("build: { outDir: './out/' }").as_deref(),
            Some("out")
        );
        assert_eq!(
            vite_out_dir("build: { outDir: resolve(__dirname, 'x') }"),
            None
        );
        assert_eq!(vite_out_dir("build: { outDir: `${x}/y` }"), None);
    }

    #[test]
    fn jsonc() {
        let v: Value = serde_json::from_str(&strip_jsonc(
            "{ // c\n \"a\": \"//not\", /* b */ \"b\": [1,2,],\n}",
        ))
        .unwrap();
        assert_eq!(v["a"], "//not");
        assert_eq!(v["b"][1], 2);
    }
}
